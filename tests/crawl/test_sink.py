"""The SQLite sink: batched commits visible during a crawl, and databases that are not ours."""

from __future__ import annotations

import asyncio

import aiosqlite
import pytest
from aiohttp import web

from helpers import base_url, crawl, rows
from scraper.crawl.crawler import Crawler
from scraper.demosite import STATE, SiteSpec, make_app
from scraper.errors import StorageError
from scraper.store.sqlite.schema import SCHEMA_VERSION


async def slow_site(aiohttp_server, reached: asyncio.Event, after: int):
    @web.middleware
    async def notice(request: web.Request, handler):
        if len(request.app[STATE].hits) >= after:
            reached.set()
        return await handler(request)

    app = make_app(SiteSpec(pages=40, page_bytes=2000, latency=0.1, extras=False))
    app.middlewares.append(notice)
    return await aiohttp_server(app)


@pytest.mark.parametrize(
    ("batch_size", "flush_interval"),
    [(5, 30.0), (10_000, 0.2)],
    ids=["commit-by-count", "commit-by-time"],
)
async def test_pages_are_committed_while_the_crawl_runs(
    aiohttp_server, make_config, batch_size, flush_interval
):
    reached = asyncio.Event()
    server = await slow_site(aiohttp_server, reached, after=20)
    config = make_config(
        [base_url(server)],
        fetch__concurrency=2,
        storage__batch_size=batch_size,
        storage__flush_interval=flush_interval,
    )
    run = asyncio.create_task(Crawler(config).run())
    await reached.wait()
    await asyncio.sleep(0.4)  # longer than the flush interval, far shorter than the crawl left
    ((midway,),) = await rows(config.storage.db, "SELECT count(*) FROM pages")
    summary = await run
    assert 0 < midway < summary.pages
    ((final,),) = await rows(config.storage.db, "SELECT count(*) FROM pages")
    assert final == summary.pages == 42


async def test_a_database_from_a_newer_scraper_is_refused(aiohttp_server, make_config):
    server = await aiohttp_server(make_app(SiteSpec(pages=3, extras=False)))
    config = make_config([base_url(server)])
    await crawl(config)
    async with aiosqlite.connect(config.storage.db) as db:
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="written by a newer scraper"):
        await crawl(config)
    assert await rows(config.storage.db, "SELECT count(*) FROM crawls") == [(1,)]


async def test_wal_mode_and_markers(aiohttp_server, make_config):
    server = await aiohttp_server(make_app(SiteSpec(pages=3, extras=False)))
    config = make_config([base_url(server)])
    await crawl(config)
    assert await rows(config.storage.db, "PRAGMA journal_mode") == [("wal",)]
    assert await rows(config.storage.db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
