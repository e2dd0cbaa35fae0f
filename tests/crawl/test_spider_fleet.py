"""Spiders in a fleet (PostgreSQL): two processes call the same callbacks with the meta stored in
the frontier, kill -9 of both and a resume give every item exactly once, and a worker with
another spider (or none) is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from aiohttp import web
from shopsite import SHOP_SPIDER, all_products, make_shop

from helpers import SCRAPER

pytestmark = pytest.mark.timeout(240)
DEADLINE = 150
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
SHOP = {"listings": 6, "per_listing": 10, "latency": 0.02}
OPTIONS = [
    "--set", "fetch.concurrency=4", "--set", "fetch.retries=0", "--set", "fetch.total_timeout=5",
    "--set", "storage.lease_ttl=7", "--set", "storage.batch_size=5",
    "--set", "storage.flush_interval=0.2", "--set", "parse.workers=1",
    "--set", "crawl.sitemaps=false", "--set", "crawl.shutdown_grace=2", "-q",
]  # fmt: skip


@contextlib.asynccontextmanager
async def shop_on_hosts(**options: Any) -> AsyncIterator[tuple[list[str], dict[str, int]]]:
    """The shop on every address of HOSTS, one port; the requests counted over all of them."""
    hits: dict[str, int] = {}
    runner = web.AppRunner(make_shop(hits=hits, **options), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOSTS[0], 0).start()
    port = runner.addresses[0][1]
    for host in HOSTS[1:]:
        await web.TCPSite(runner, host, port).start()
    try:
        yield [f"http://{host}:{port}/" for host in HOSTS], hits
    finally:
        await runner.cleanup()


async def start(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *SCRAPER, *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    _, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(sql)
        return await cursor.fetchall()


def kill_9_all(pid: int) -> None:
    """kill -9 of a process and every process under it, at once (the crawl, its worker, their
    parse workers)."""
    fleet = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for process in fleet:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(fleet, timeout=10)


async def write(folder: Path, name: str, source: str) -> str:
    await asyncio.to_thread((folder / name).write_text, textwrap.dedent(source))
    return f"{name}:Shop"


def expected(roots: list[str]) -> list[tuple[str, str]]:
    products = all_products(SHOP["listings"], SHOP["per_listing"])
    return sorted(
        (f"{root}product/{pid}", root if pid < 100 else f"{root}?page={pid // 100}")
        for root in roots
        for pid in products
    )


async def test_kill_9_of_a_fleet_of_two_then_resume_gives_every_item_once(
    pg_url: str, tmp_path: Path
) -> None:
    spider = await write(tmp_path, "shop.py", SHOP_SPIDER)
    async with shop_on_hosts(**SHOP) as (roots, hits):
        line = ["crawl", *roots, "--spider", spider, "--db", pg_url, "--workers", "2", *OPTIONS]
        first = await start(*line, cwd=tmp_path)
        total = len(expected(roots)) + len(roots) * SHOP["listings"]
        deadline = time.monotonic() + DEADLINE
        while sum(hits.values()) < total // 3:
            assert first.returncode is None, await first.communicate()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        workers = (await rows(pg_url, "SELECT count(*) FROM workers"))[0][0]
        await asyncio.to_thread(kill_9_all, first.pid)
        await first.communicate()
        stored_before = (await rows(pg_url, "SELECT count(*) FROM items"))[0][0]
        code, err = await finish(await start(*line, cwd=tmp_path))
        assert code == 0, err
    found = await rows(pg_url, "SELECT url, data FROM items ORDER BY url")
    assert sorted((url, json.loads(data)["listing"]) for url, data in found) == expected(roots)
    assert await rows(pg_url, "SELECT id, status FROM crawls") == [(1, "finished")]
    assert 0 < stored_before < len(found)  # the kill landed mid-crawl
    assert workers >= 1
    # Both processes of the resumed run worked, each calling the callbacks with stored meta.
    shares = await rows(pg_url, "SELECT count(*) FROM workers WHERE pages > 0")
    assert shares[0][0] >= 2


OTHER = SHOP_SPIDER.replace('"name": page.css_first("h1").text()', '"title": page.url')


async def test_a_worker_with_another_spider_or_none_is_refused(pg_url: str, tmp_path: Path) -> None:
    spider = await write(tmp_path, "shop.py", SHOP_SPIDER)
    other = await write(tmp_path, "other.py", OTHER)
    async with shop_on_hosts(listings=6, per_listing=10, latency=0.3) as (roots, _):
        crawl = await start("crawl", *roots, "--spider", spider, "--db", pg_url, *OPTIONS,
                            cwd=tmp_path)  # fmt: skip
        deadline = time.monotonic() + DEADLINE
        while not await _has_workers(pg_url):
            assert crawl.returncode is None, await crawl.communicate()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        try:
            code, err = await finish(
                await start("worker", "--spider", other, "--db", pg_url, *OPTIONS, cwd=tmp_path)
            )
            assert code == 2
            assert "runs with another spider" in err, err
            code, err = await finish(await start("worker", "--db", pg_url, *OPTIONS, cwd=tmp_path))
            assert code == 2
            assert "runs with a spider" in err and "--spider" in err, err
            assert len(err.strip().splitlines()) == 1
        finally:
            crawl.kill()
            await crawl.communicate()


async def _has_workers(url: str) -> bool:
    tables = await rows(url, "SELECT 1 FROM pg_tables WHERE tablename = 'workers'")
    return bool(tables) and (await rows(url, "SELECT count(*) FROM workers"))[0][0] > 0
