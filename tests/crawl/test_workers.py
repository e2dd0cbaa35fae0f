"""Several processes on one crawl (PostgreSQL): real workers, real signals, one real server.

The demo site is served on several hosts at once (127.0.0.2, .3, ...: one aiohttp app listening
on each, the Host header telling them apart), with a per-host delay. Its log records when each
request arrived and when its response left, per host, so politeness is checked where it
matters: at the server, across all workers together.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web

from scraper.demosite import SiteSpec, make_app

SCRAPER = [sys.executable, "-m", "scraper"]
HOSTS = [f"127.0.0.{n}" for n in range(2, 8)]  # six hosts
SPEC = SiteSpec(pages=20, links_per_page=8, page_bytes=2000, extras=False, seed=11)
DELAY = 0.15
PER_HOST = 2
# Arrival at the server is not departure from the client: between a request's start (its fetch
# slot, from which the crawler counts the delay) and its handler here, both event loops run
# whatever else is ready, on a 2-core machine busy with crawlers starting up, their parse
# workers and PostgreSQL. Measured on this site, with one process (no leases at all) as with
# three: single arrivals up to ~85 ms late. So no gap between two starts is checked against
# the delay alone; every run of k starts at a host is: it must span at least k delays, less one
# such jitter. Two owners sending at once (twice the rate) fail that within a few requests.
ARRIVAL_JITTER = 0.1
OPTIONS = [
    "--set", f"fetch.per_host_delay={DELAY}", "--set", f"fetch.per_host_concurrency={PER_HOST}",
    "--set", "fetch.concurrency=4", "--set", "fetch.autothrottle=false",
    "--set", "fetch.total_timeout=2", "--set", "fetch.retries=0",
    "--set", "storage.lease_ttl=3", "--set", "storage.batch_size=5",
    "--set", "storage.flush_interval=0.2", "--set", "parse.workers=1",
    "--set", "crawl.sitemaps=false", "--set", "crawl.shutdown_grace=2", "-q",
]  # fmt: skip


@dataclass
class Served:
    roots: list[str]
    # host, path, arrived, left, the client's port (which connection: one process's)
    log: list[tuple[str, str, float, float, int]] = field(default_factory=list)
    hits: int = 0

    def expected(self) -> list[str]:
        return sorted(root + path.lstrip("/") for root in self.roots for path in SPEC.reachable())

    def pages(self) -> list[tuple[str, str, float, float, int]]:
        return [entry for entry in self.log if entry[1] != "/robots.txt"]


@pytest.fixture
async def site() -> AsyncIterator[Served]:
    app = make_app(SPEC)
    served = Served(roots=[])

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        arrived = time.monotonic()
        served.hits += 1
        try:
            return await handler(request)
        finally:
            port = (request.transport.get_extra_info("peername") or ("", 0))[1]
            served.log.append((request.host, request.path_qs, arrived, time.monotonic(), port))

    app.middlewares.append(record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    first = web.TCPSite(runner, HOSTS[0], 0)
    await first.start()
    port = runner.addresses[0][1]
    for host in HOSTS[1:]:
        await web.TCPSite(runner, host, port).start()
    served.roots = [f"http://{host}:{port}/" for host in HOSTS]
    yield served
    await runner.cleanup()


def start(*args: str, cwd: Path) -> Any:
    return asyncio.create_subprocess_exec(
        *SCRAPER, *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def finish(process: Any, within: float = 120) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), within)
    return process.returncode, out.decode(), err.decode()


async def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(sql, params or None)
        return await cursor.fetchall()


async def until(condition: Any, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def joined(url: str, workers: int) -> None:
    """Wait until `workers` processes work on the crawl (each registers at its first claim)."""
    deadline = time.monotonic() + 60
    while (await rows(url, "SELECT count(*) FROM workers"))[0][0] < workers:
        assert time.monotonic() < deadline, "the workers did not join"
        await asyncio.sleep(0.05)


async def assert_complete(url: str, served: Served) -> None:
    """Every reachable page stored, each once; nothing pending or leased; finished once."""
    stored = await rows(url, "SELECT url FROM pages ORDER BY url")
    assert [u for (u,) in stored] == served.expected()
    assert await rows(url, "SELECT DISTINCT state FROM frontier") == [(2,)]
    assert await rows(url, "SELECT id, status FROM crawls") == [(1, "finished")]
    assert await rows(url, "SELECT count(*) FROM hosts WHERE owner IS NOT NULL") == [(0,)]


def assert_polite(served: Served) -> None:
    """Per host, across every worker: never more than PER_HOST requests in flight, and no run of
    k + 1 starts within less than k delays (less the arrival jitter)."""
    by_host: dict[str, list[tuple[float, float, str, int]]] = {}
    for host, path, arrived, left, port in served.pages():
        by_host.setdefault(host, []).append((arrived, left, path, port))
    assert len(by_host) == len(HOSTS)
    for host, spans in by_host.items():
        starts = sorted((arrived, path, port) for arrived, _, path, port in spans)
        fast = [
            (k, round(starts[i + k][0] - starts[i][0], 3), starts[i], starts[i + k])
            for i in range(len(starts))
            for k in range(1, len(starts) - i)
            if starts[i + k][0] - starts[i][0] < k * DELAY - ARRIVAL_JITTER
        ]
        assert not fast, (host, fast[:3])
        events = sorted([(a, 1) for a, *_ in spans] + [(b, -1) for _, b, *_ in spans])
        in_flight = most = 0
        for _, step in events:
            in_flight += step
            most = max(most, in_flight)
        assert most <= PER_HOST, (host, most)


async def test_three_workers_crawl_every_page_once_politely(
    site: Served, pg_url: str, tmp_path: Path
) -> None:
    code, out, err = await finish(
        await start("crawl", *site.roots, "--db", pg_url, "--workers", "3", *OPTIONS, cwd=tmp_path)
    )
    assert code == 0, err
    await assert_complete(pg_url, site)
    fetched = [(host, path) for host, path, *_ in site.pages()]
    assert len(fetched) == len(set(fetched)) == len(site.expected())  # each fetched once
    assert_polite(site)
    robots = [host for host, path, *_ in site.log if path == "/robots.txt"]
    assert sorted(robots) == sorted({host for host, *_ in site.log})  # once per host, by anyone
    workers = await rows(pg_url, "SELECT status, pages FROM workers ORDER BY id")
    assert [status for status, _ in workers] == ["finished"] * 3, err
    assert sum(pages for _, pages in workers) == len(site.expected())
    assert all(pages > 0 for _, pages in workers), workers  # each took a share
    assert "workers:   3:" in out


async def test_a_worker_waiting_for_its_crawl_id_ends_when_none_comes(
    pg_url: str, tmp_path: Path
) -> None:
    """`crawl --workers` starts its workers with `--crawl -` before its crawl begins; if it
    fails first, they read nothing and end without joining anything."""
    worker = await asyncio.create_subprocess_exec(
        *SCRAPER, "worker", "--db", pg_url, "--crawl", "-", *OPTIONS, cwd=tmp_path,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(worker.communicate(b""), 60)
    assert worker.returncode == 0, err
    assert out == b""


async def test_crawl_workers_end_with_a_crawl_that_cannot_begin(
    pg_url: str, tmp_path: Path
) -> None:
    missing = pg_url.replace("/t_", "/no_such_database_", 1)
    process = await start(
        "crawl", "http://127.0.0.2/", "--db", missing, "--workers", "3", *OPTIONS, cwd=tmp_path
    )
    code, _, err = await finish(process, within=60)  # its workers' stderr is closed too
    assert code == 2, err
    assert err.count("scraper: error:") == 1, err  # the crawl's one line; the workers say nothing


@pytest.mark.parametrize("victim", ["the crawl's own process", "a worker"])
@pytest.mark.parametrize("after_hits", [15, 60])
async def test_kill_9_of_one_worker_the_others_finish(
    site: Served, pg_url: str, tmp_path: Path, victim: str, after_hits: int
) -> None:
    first = await start("crawl", *site.roots, "--db", pg_url, *OPTIONS, cwd=tmp_path)
    await until(lambda: site.hits >= 1)
    others = [await start("worker", "--db", pg_url, *OPTIONS, cwd=tmp_path) for _ in range(2)]
    await joined(pg_url, 3)
    await until(lambda: site.hits >= after_hits + random.randrange(10))
    killed = first if victim == "the crawl's own process" else others[0]
    killed.kill()
    await killed.communicate()
    survivors = [p for p in (first, *others) if p is not killed]
    for process in survivors:
        code, _, err = await finish(process)
        assert code == 0, err
    await assert_complete(pg_url, site)
    stored = await rows(pg_url, "SELECT count(*), count(DISTINCT url) FROM pages")
    assert stored == [(len(site.expected()), len(site.expected()))]  # no duplicate, none lost
    assert_polite(site)  # the dead one's requests ended before its leases did


async def test_a_joining_worker_takes_a_share(site: Served, pg_url: str, tmp_path: Path) -> None:
    first = await start("crawl", *site.roots, "--db", pg_url, *OPTIONS, cwd=tmp_path)
    await until(lambda: site.hits >= 10)
    joined = await start("worker", "--db", pg_url, *OPTIONS, cwd=tmp_path)
    for process in (first, joined):
        code, _, err = await finish(process)
        assert code == 0, err
    await assert_complete(pg_url, site)
    shares = dict(await rows(pg_url, "SELECT status, count(*) FROM workers GROUP BY 1"))
    assert shares == {"finished": 2}
    (joined_pages,) = await rows(pg_url, "SELECT min(pages) FROM workers")
    assert joined_pages[0] > 0
    assert_polite(site)


async def test_ctrl_c_on_one_worker_releases_its_leases_and_others_carry_on(
    site: Served, pg_url: str, tmp_path: Path
) -> None:
    first = await start("crawl", *site.roots, "--db", pg_url, *OPTIONS, cwd=tmp_path)
    await until(lambda: site.hits >= 1)
    worker = await start("worker", "--db", pg_url, *OPTIONS, cwd=tmp_path)
    await joined(pg_url, 2)
    await until(lambda: site.hits >= 40)
    worker.send_signal(signal.SIGINT)
    code, _, _ = await finish(worker, within=10)  # within the grace, not a lease's TTL
    assert code == 130
    (mine,) = await rows(pg_url, "SELECT id FROM workers WHERE status = 'interrupted'")
    assert await rows(pg_url, "SELECT count(*) FROM hosts WHERE owner = %s", mine[0]) == [(0,)]
    code, _, err = await finish(first)
    assert code == 0, err
    await assert_complete(pg_url, site)


async def test_a_crawl_stopped_everywhere_resumes(
    site: Served, pg_url: str, tmp_path: Path
) -> None:
    first = await start("crawl", *site.roots, "--db", pg_url, "--workers", "2", *OPTIONS,
                        cwd=tmp_path)  # fmt: skip
    await until(lambda: site.hits >= 30)
    first.send_signal(signal.SIGINT)  # passed on to its worker
    code, _, _ = await finish(first, within=20)
    assert code == 130
    assert await rows(pg_url, "SELECT status FROM crawls") == [("interrupted",)]
    assert await rows(pg_url, "SELECT count(*) FROM hosts WHERE owner IS NOT NULL") == [(0,)]
    again = ["crawl", *site.roots, "--db", pg_url, "--workers", "2", *OPTIONS]
    code, _, err = await finish(await start(*again, cwd=tmp_path))
    assert code == 0, err
    assert "resuming crawl 1" in err
    await assert_complete(pg_url, site)
