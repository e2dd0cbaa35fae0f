"""Whole crawls of the demo site: exactly the reachable pages, once each, with what they contain."""

from __future__ import annotations

import asyncio
import json
import logging

import psutil
import pytest
from aiohttp import web

from helpers import base_url, crawl, rows, served
from scraper.config import Config
from scraper.crawl.admit import Admission
from scraper.crawl.crawler import Crawler
from scraper.demosite import STATE, SiteSpec, make_app
from scraper.errors import StorageError
from scraper.results.stats import CrawlStats, crawl_stats, format_stats
from scraper.store import open_results

SPEC = SiteSpec(
    pages=80, page_bytes=4000, special_count=1, slow_seconds=0.1, huge_bytes=400_000, seed=3
)


@pytest.fixture
async def demo(aiohttp_server):
    server = await aiohttp_server(make_app(SPEC))
    return server, base_url(server)


async def test_full_crawl_stores_exactly_the_reachable_pages_once(demo, make_config):
    server, root = demo
    config = make_config(
        [root],
        fetch__max_bytes=200_000,
        extract__price="p.price",
        extract__headings={"css": "h1", "all": True},
    )
    summary = await crawl(config)
    db = config.storage.db

    expected = {root + path.lstrip("/") for path in SPEC.reachable()}
    stored = await rows(db, "SELECT url FROM pages")
    assert sorted(url for (url,) in stored) == sorted(expected)  # once each, nothing else
    assert summary.pages == len(expected)
    repeats = {path: n for path, n in server.app[STATE].hits.items() if n > 1}
    # Two 503s before the flaky page's 200. /page/0 is fetched once, though /redirect/0 leads
    # there too: a redirect's target is a frontier URL like any other.
    assert repeats == {"/flaky/0": 3}
    assert "/away" not in server.app[STATE].hits  # off-site links are not followed

    status = dict(await rows(db, "SELECT url, status FROM pages"))
    assert status[root + "missing/0"] == 404
    kinds = dict(await rows(db, "SELECT url, error_kind FROM pages WHERE error_kind IS NOT NULL"))
    assert kinds == {root + "missing/0": "http", root + "huge/0": "too_large"}
    attempts = dict(await rows(db, "SELECT url, attempts FROM pages WHERE attempts > 1"))
    assert attempts == {root + "flaky/0": 3}
    (final_url,) = (
        await rows(db, "SELECT final_url FROM pages WHERE url = ?", root + "redirect/0")
    )[0]
    assert final_url == root + "page/0"


async def test_pages_carry_titles_fields_and_links(demo, make_config):
    _, root = demo
    config = make_config(
        [root],
        fetch__max_bytes=200_000,
        extract__price="p.price",
        extract__headings={"css": "h1", "all": True},
    )
    await crawl(config)
    db = config.storage.db
    for i in (0, 7, 42):
        url = f"{root}page/{i}"
        cols = "title, description, canonical, fields, depth, text_hash"
        ((title, description, canonical, fields, depth, text_hash),) = await rows(
            db, f"SELECT {cols} FROM pages WHERE url = ?", url
        )
        assert title == f"Page {i} — Demo Site"
        assert description == f"About {title}"
        assert canonical == url
        assert json.loads(fields) == {"price": SPEC.price(i), "headings": [title]}
        assert depth >= 1
        assert text_hash
        links = {to for (to,) in await rows(db, "SELECT to_url FROM links WHERE from_url = ?", url)}
        expected = {root + target.lstrip("/") for _, target in SPEC.page_links(i)}
        assert links == expected | {"http://offsite.invalid/away"}


async def test_max_pages_is_exact(demo, make_config):
    server, root = demo
    config = make_config([root], crawl__max_pages=25)
    summary = await crawl(config)
    assert summary.pages == 25
    assert len(server.app[STATE].hits) <= 25 + 1  # and perhaps a redirect's target
    ((count,),) = await rows(config.storage.db, "SELECT count(*) FROM pages")
    assert count == 25
    # The summary says which limit ended the crawl, what it left, and how to go on.
    text = format_stats(await asyncio.to_thread(stats_of, config))
    ((pending,),) = await rows(config.storage.db, "SELECT count(*) FROM frontier WHERE state = 0")
    assert pending > 0
    assert f"limits:    crawl.max_pages (25) reached; {pending} URLs left pending" in text
    assert "run the same command" in text


async def test_a_crawl_no_limit_ended_says_nothing_of_limits(demo, make_config):
    _, root = demo
    config = make_config([root], crawl__max_pages_per_host=1000, crawl__max_depth=50)
    await crawl(config)
    assert "limits:" not in format_stats(await asyncio.to_thread(stats_of, config))


async def test_max_depth_and_per_host_caps_are_named(demo, make_config):
    _, root = demo
    config = make_config([root], crawl__max_pages_per_host=10, crawl__max_depth=1)
    await crawl(config)
    text = format_stats(await asyncio.to_thread(stats_of, config))
    assert "crawl.max_pages_per_host (10) reached on 1 host" in text
    assert "crawl.max_depth (1): links past it not followed" in text


async def test_failing_pages_are_stored_with_their_error(aiohttp_server, make_config):
    spec = SiteSpec(pages=60, page_bytes=2000, extras=False, error_rate=0.2, seed=11)
    server = await aiohttp_server(make_app(spec))
    root = base_url(server)
    config = make_config([root], fetch__retries=1)
    summary = await crawl(config)
    failing = {f"{root}page/{i}" for i in range(spec.pages) if spec.fails(i)}
    failing &= {root + path.lstrip("/") for path in spec.reachable()}
    assert failing  # the seed gives some failing pages that are reachable
    stored = await rows(
        config.storage.db, "SELECT url, status, attempts FROM pages WHERE error_kind = 'http'"
    )
    assert {(url, status, attempts) for url, status, attempts in stored} == {
        (url, 500, 2) for url in failing
    }
    assert summary.pages == len(spec.reachable())


def tree_app() -> web.Application:
    """/ → /d1/{0,1} → /d1/{i}/d2/{0,1} → ... : depth is unambiguous."""

    async def node(request: web.Request) -> web.Response:
        path = request.path.rstrip("/")
        depth = path.count("/d")
        links = "".join(f'<a href="{path}/d{depth + 1}-{k}">{k}</a>' for k in range(2))
        return web.Response(text=f"<html><body>{links}</body></html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", node)
    return app


@pytest.mark.parametrize(("max_depth", "pages"), [(1, 3), (2, 7), (3, 15)])
async def test_max_depth_is_honoured(aiohttp_server, make_config, max_depth, pages):
    server = await aiohttp_server(tree_app())
    config = make_config([base_url(server)], crawl__max_depth=max_depth)
    summary = await crawl(config)
    assert summary.pages == pages
    ((deepest,),) = await rows(config.storage.db, "SELECT max(depth) FROM pages")
    assert deepest == max_depth


async def test_allowed_domains(aiohttp_server, make_config):
    async def other(request: web.Request) -> web.Response:
        return web.Response(text="<title>other host</title>", content_type="text/html")

    other_app = web.Application()
    other_app.router.add_get("/", other)
    other_server = await aiohttp_server(other_app, host="127.0.0.2")

    async def home(request: web.Request) -> web.Response:
        link = f'<a href="{base_url(other_server)}">other</a>'
        return web.Response(text=f"<title>home</title>{link}", content_type="text/html")

    home_app = web.Application()
    home_app.router.add_get("/", home)
    home_server = await aiohttp_server(home_app, host="127.0.0.1")

    stay = make_config([base_url(home_server)])
    assert (await crawl(stay)).pages == 1  # default scope: the seeds' hosts only

    widen = make_config(
        [base_url(home_server)], crawl__allowed_domains=["127.0.0.1", "127.0.0.2"],
        fetch__block_private=False,  # 127.0.0.2 is no seed's (tests/crawl/test_addresses.py)
    )  # fmt: skip
    assert (await crawl(widen)).pages == 2
    titles = {t for (t,) in await rows(widen.storage.db, "SELECT title FROM pages")}
    assert titles == {"home", "other host"}


async def test_stop_ends_the_crawl_as_interrupted_and_keeps_what_was_stored(
    aiohttp_server, make_config
):
    app = make_app(SiteSpec(pages=400, page_bytes=2000, latency=0.05))
    busy = served(app, 30)
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], storage__batch_size=5)
    crawler = Crawler(config)
    run = asyncio.create_task(crawler.run())
    await busy.wait()
    crawler.stop()
    summary = await run
    assert summary.status == "interrupted"
    db = config.storage.db
    ((status, pages),) = await rows(db, "SELECT status, pages FROM crawls")
    assert status == "interrupted"
    ((stored, distinct),) = await rows(db, "SELECT count(*), count(DISTINCT url) FROM pages")
    assert stored == distinct == pages == summary.pages
    assert 0 < stored < 400


@pytest.mark.parametrize(
    "error", [StorageError("disk full"), RuntimeError("a bug")], ids=["user-error", "bug"]
)
async def test_a_stage_that_fails_fails_the_crawl(demo, make_config, monkeypatch, error):
    """A ScraperError comes out of run() as itself, one line for the CLI; a bug keeps its
    traceback in the TaskGroups' ExceptionGroup. Either way the crawl is recorded as failed."""

    def broken(*args: object) -> None:
        raise error

    monkeypatch.setattr(Admission, "links", broken)  # fails in a parse task, mid-crawl
    _, root = demo
    config = make_config([root])
    with pytest.raises(BaseException) as caught:
        await crawl(config)
    if isinstance(error, StorageError):
        assert caught.value is error
    else:
        assert isinstance(caught.value, BaseExceptionGroup)
        assert caught.value.split(RuntimeError)[0] is not None
    assert await rows(config.storage.db, "SELECT status FROM crawls") == [("failed",)]


async def test_a_run_cancelled_from_outside_is_recorded_once_its_stages_have_ended(
    aiohttp_server, make_config
):
    """No stop(): the task is cancelled. The stages end first (the sink storing what reached it),
    then the crawl is recorded as interrupted with what was stored, and the cancel goes on."""
    app = make_app(SiteSpec(pages=400, page_bytes=2000, latency=0.05))
    busy = served(app, 30)
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], storage__batch_size=5)
    run = asyncio.create_task(Crawler(config).run())
    await busy.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    db = config.storage.db
    ((status, pages),) = await rows(db, "SELECT status, pages FROM crawls")
    assert status == "interrupted"
    ((stored,),) = await rows(db, "SELECT count(*) FROM pages")
    assert 0 < stored == pages < 400


async def test_a_second_crawl_into_the_same_database_updates_pages(demo, make_config):
    _, root = demo
    config = make_config([root], crawl__max_pages=10)
    first = await crawl(config)
    second = await crawl(config)
    assert (first.crawl_id, second.crawl_id) == (1, 2)
    crawls = await rows(config.storage.db, "SELECT id, status, pages FROM crawls ORDER BY id")
    assert crawls == [(1, "finished", 10), (2, "finished", 10)]
    ((count, latest),) = await rows(config.storage.db, "SELECT count(*), min(crawl_id) FROM pages")
    assert (count, latest) == (10, 2)


async def test_the_crawl_row_keeps_loop_lag_and_per_host_settings(demo, make_config):
    server, root = demo
    config = make_config([root], crawl__max_pages=30)
    await crawl(config)
    ((counters,),) = await rows(config.storage.db, "SELECT counters FROM crawls")
    health = json.loads(counters)
    assert health["loop_lag_ms"]["samples"] > 0
    assert 0 <= health["loop_lag_ms"]["p50"] <= health["loop_lag_ms"]["p99"]
    assert set(health["stages"]) == {"fetch", "parse", "sink"}
    for stage in health["stages"].values():
        assert 0 <= stage["load_pct"] <= stage["busy_pct"] <= 100
        assert 0 <= stage["queue_mean"] <= stage["queue_max"]
    host = f"127.0.0.1:{server.port}"
    assert set(health["hosts"][host]) >= {"concurrency", "delay_s", "latency_ms"}


async def test_inline_parsing_stores_what_the_pool_stores_and_starts_no_process(
    demo, make_config, tmp_path
):
    _, root = demo
    columns = "url, status, title, description, canonical, fields, links, text_hash, error_kind"
    stored: dict[int, list[tuple[object, ...]]] = {}
    started: dict[int, set[int]] = {}
    for workers in (1, 0):
        config = make_config(
            [root],
            parse__workers=workers,
            storage__db=str(tmp_path / f"workers-{workers}.db"),
            fetch__max_bytes=200_000,
            extract__price="p.price",
        )
        before = await asyncio.to_thread(_children)
        seen: set[int] = set()
        watch = asyncio.create_task(_watch_children(seen))
        try:
            await crawl(config)
        finally:
            watch.cancel()
        started[workers] = seen - before
        stored[workers] = await rows(config.storage.db, f"SELECT {columns} FROM pages ORDER BY url")
    assert started[1]  # the watch does see a pool's worker
    assert started[0] == set()  # inline: no parse worker, nor any other process
    assert len(stored[0]) == len(SPEC.reachable())
    assert stored[0] == stored[1]
    titles = {url: title for url, _, title, *_ in stored[0]}
    assert titles[root + "page/7"] == "Page 7 — Demo Site"


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


async def _watch_children(seen: set[int]) -> None:
    """Every process started under this one, sampled (off the loop: psutil reads /proc)."""
    while True:
        seen |= await asyncio.to_thread(_children)
        await asyncio.sleep(0.01)


async def test_a_stalled_loop_is_logged_with_the_stages_queues(aiohttp_server, make_config, caplog):
    """Something holding the loop 200 ms (here a busy wait, standing in for a bad callback) is
    logged as a warning that names the stages' queues, and counted in the crawl's row."""
    import time

    app = make_app(SiteSpec(pages=60, page_bytes=2000, latency=0.02, extras=False))
    busy = served(app, 10)
    server = await aiohttp_server(app)
    config = make_config([base_url(server)])
    caplog.set_level(logging.INFO, logger="scraper.crawl.crawler")
    run = asyncio.create_task(Crawler(config).run())
    await busy.wait()
    for _ in range(2):
        end = time.perf_counter() + 0.2  # the monitor wakes every 50 ms: a lag of at least 150
        while time.perf_counter() < end:  # hog the loop without a blocking call
            pass
        await asyncio.sleep(0.1)  # the monitor wakes, late, in between
    assert (await run).status == "finished"
    stalls = [r for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert len(stalls) >= 2, "no stall warning"
    first, *rest = stalls
    assert first.levelno == logging.WARNING and "further stalls are logged at INFO" in first.msg
    message = first.getMessage()
    assert "queues: fetch" in message and "parse" in message and "fullest:" in message
    assert all(r.levelno == logging.INFO for r in rest)  # explained once
    ((counters,),) = await rows(config.storage.db, "SELECT counters FROM crawls")
    assert json.loads(counters)["loop_lag_ms"]["stalls"] >= 2
    assert "stalls over 100 ms" in format_stats(await asyncio.to_thread(stats_of, config))


def stats_of(config: Config) -> CrawlStats:
    with open_results(config.storage.db) as reader:
        return crawl_stats(reader, reader.find_crawl(None))
