"""Several processes on one crawl (PostgreSQL): real workers, real signals, one real server.

The demo site is served on several hosts at once (127.0.0.2, .3, ...: one aiohttp app listening
on each, the Host header telling them apart), with a per-host delay. Its log records when each
request arrived and when its response left, per host, so politeness is checked where it
matters: at the server, across all workers together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web

from scraper.crawl.crawler import Crawler
from scraper.crawl.gauges import GAUGE_PERIOD
from scraper.demosite import SiteSpec, make_app
from scraper.store.fleet_health import merge_healths

# Each test runs two or three crawl processes (each with a parse worker) beside PostgreSQL and
# this test's server: 4-10 s on a quiet 2-core machine, and up to ~40 s measured with both cores
# busy beside it (load 9). Deadlines inside the tests (DEADLINE: a process's end, a condition)
# stay under the test's timeout, so a stuck process fails with what it said, not a timeout.
pytestmark = pytest.mark.timeout(240)
DEADLINE = 150

SCRAPER = [sys.executable, "-m", "scraper"]
HOSTS = [f"127.0.0.{n}" for n in range(2, 8)]  # six hosts
SPEC = SiteSpec(pages=20, links_per_page=8, page_bytes=2000, extras=False, seed=11)
DELAY = 0.15
PER_HOST = 2
# Arrival at the server is not departure from the client: between a request's start (its fetch
# slot, from which the crawler counts the delay) and its handler here, both event loops run
# whatever else is ready, on a 2-core machine busy with crawlers starting up, their parse
# workers and PostgreSQL. Measured on this site, with one process (no leases at all) as with
# three: single arrivals up to ~85 ms late, and over 100 ms with other test suites running
# beside this one. So no gap between two starts is checked against the delay alone; every run
# of k starts at a host is: it must span at least k delays, less one such jitter. Two owners
# sending at once (twice the rate) fail that within five requests (k * DELAY / 2 < k * DELAY -
# ARRIVAL_JITTER from k = 4), and a host here gets 20.
ARRIVAL_JITTER = 0.25
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
    # The pages of `hanging` get no answer until `gate` opens; those whose client gave up
    # (closed the connection: the server then cancels the handler) are logged in `abandoned`.
    hanging: str = ""
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0
    abandoned: list[tuple[str, str, float, float, int]] = field(default_factory=list)
    # At each arrival there: its client's port, and the ports of the requests waiting there
    # whose client had not hung up (their socket not at its end), as the server's kernel says.
    arrivals: list[tuple[int, list[int]]] = field(default_factory=list)
    held: dict[int, asyncio.BaseTransport] = field(default_factory=dict)

    def expected(self) -> list[str]:
        return sorted(root + path.lstrip("/") for root in self.roots for path in SPEC.reachable())

    def pages(self) -> list[tuple[str, str, float, float, int]]:
        return [entry for entry in self.log if entry[1] != "/robots.txt"]


@contextlib.asynccontextmanager
async def serve(*, hang: bool = False, names: list[str] | None = None) -> AsyncIterator[Served]:
    """The demo site on every address of HOSTS (under `names`, one per address, if given); with
    `hang`, the last host's pages wait for the gate (the server cancels a handler whose client
    hangs up: aiohttp's handler_cancellation)."""
    app = make_app(SPEC)
    served = Served(roots=[])

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        arrived = time.monotonic()
        served.hits += 1
        port = (request.transport.get_extra_info("peername") or ("", 0))[1]
        try:
            if request.host == served.hanging and request.path != "/robots.txt":
                connected = [p for p, held in served.held.items() if still_connected(held)]
                served.arrivals.append((port, connected))
                served.held[port] = request.transport
                served.waiting += 1
                try:
                    await served.gate.wait()
                finally:
                    del served.held[port]
            return await handler(request)
        except asyncio.CancelledError:
            left = time.monotonic()
            served.abandoned.append((request.host, request.path_qs, arrived, left, port))
            raise
        finally:
            served.log.append((request.host, request.path_qs, arrived, time.monotonic(), port))

    app.middlewares.append(record)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=hang)
    await runner.setup()
    first = web.TCPSite(runner, HOSTS[0], 0)
    await first.start()
    port = runner.addresses[0][1]
    for host in HOSTS[1:]:
        await web.TCPSite(runner, host, port).start()
    served.roots = [f"http://{host}:{port}/" for host in names or HOSTS]
    if hang:
        served.hanging = f"{HOSTS[-1]}:{port}"
    else:
        served.gate.set()
    try:
        yield served
    finally:
        served.gate.set()
        await runner.cleanup()


def still_connected(transport: asyncio.BaseTransport) -> bool:
    """Has the client not closed this connection? Asked of the kernel (a peek at the socket),
    not of the event loop, which may not have run the close's callbacks yet."""
    if transport.is_closing():
        return False
    fd = transport.get_extra_info("socket").fileno()
    with socket.socket(fileno=os.dup(fd)) as peek:
        peek.setblocking(False)
        try:
            return peek.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True  # nothing to read, and no end: still connected
        except OSError:
            return False  # reset


@pytest.fixture
async def site() -> AsyncIterator[Served]:
    async with serve() as served:
        yield served


# The processes the running test started: whatever is left of them when it ends (it failed)
# is killed, so that it does not go on loading the machine, nor hold its database open.
STARTED: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
async def reap() -> AsyncIterator[None]:
    yield
    for process in STARTED:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    STARTED.clear()


async def start(*args: str, cwd: Path, **options: Any) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        *SCRAPER, *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options
    )
    STARTED.append(process)
    return process


async def finish(process: Any, within: float = DEADLINE) -> tuple[int, str, str]:
    """Its exit code and output; one that does not end within `within` seconds is killed, and
    the test fails with what it said."""
    said = asyncio.ensure_future(process.communicate())
    try:
        out, err = await asyncio.wait_for(asyncio.shield(said), within)
    except TimeoutError:
        process.kill()
        out, err = await said
        raise AssertionError(f"not ended within {within} s; it said: {err.decode()}") from None
    return process.returncode, out.decode(), err.decode()


async def rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(sql, params or None)
        return await cursor.fetchall()


async def until(condition: Any, within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


async def joined(url: str, workers: int, processes: tuple[Any, ...] = ()) -> None:
    """Wait until `workers` processes work on the crawl (each registers at its first claim);
    none of `processes` may end meanwhile."""
    deadline = time.monotonic() + DEADLINE
    while (await rows(url, "SELECT count(*) FROM workers"))[0][0] < workers:
        assert time.monotonic() < deadline, "the workers did not join"
        ended = [p for p in processes if p.returncode is not None]
        assert not ended, [await finish(p) for p in ended]
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def work_held(url: str) -> AsyncIterator[None]:
    """Once the crawl runs, and until the block ends, no process on it can write its frontier:
    no URL is leased, stored or given back, so the crawl cannot end (nor go far) while workers
    start beside it. A worker starting on a busy machine took up to 12 s to join (load 9), by
    when one process had crawled 110 of the site's 120 pages: without this hold a test of a
    fleet would often test one process. (A SHARE lock on the table: reads go on, and a worker
    registers, in `workers`, before its first claim writes the frontier.)"""
    deadline = time.monotonic() + DEADLINE
    while not await rows(url, "SELECT 1 FROM pg_tables WHERE tablename = 'workers'"):
        assert time.monotonic() < deadline, "the crawl did not begin"
        await asyncio.sleep(0.02)
    await joined(url, 1)  # its seeds stored (a hold before would keep it from its first claim)
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await conn.execute("LOCK TABLE frontier IN SHARE MODE")
        yield


async def workers_joined(url: str, cwd: Path, options: list[str], count: int = 2) -> list[Any]:
    """Start `count` workers on the crawl running at `url`, and let the crawl go on once each
    has joined it (with the one that began it: count + 1 processes)."""
    async with work_held(url):
        started = [await start("worker", "--db", url, *options, cwd=cwd) for _ in range(count)]
        await joined(url, count + 1, tuple(started))
    return started


async def assert_complete(url: str, served: Served) -> None:
    """Every reachable page stored, each once; nothing pending or leased; finished once."""
    stored = await rows(url, "SELECT url FROM pages ORDER BY url")
    assert [u for (u,) in stored] == served.expected()
    assert await rows(url, "SELECT DISTINCT state FROM frontier") == [(2,)]
    assert await rows(url, "SELECT id, status FROM crawls") == [(1, "finished")]
    assert await rows(url, "SELECT count(*) FROM hosts WHERE owner IS NOT NULL") == [(0,)]


def assert_polite(
    served: Served, *, every_host: bool = True, slot_of: Callable[[str], str] = str
) -> None:
    """Per host (per politeness slot: `slot_of` a Host header), across every worker: never more
    than PER_HOST requests in flight, and no run of k + 1 starts within less than k delays (less
    the arrival jitter)."""
    by_host: dict[str, list[tuple[float, float, str, int]]] = {}
    for host, path, arrived, left, port in served.pages():
        by_host.setdefault(slot_of(host), []).append((arrived, left, path, port))
    slots = {slot_of(root.split("/")[2]) for root in served.roots}
    assert set(by_host) == slots or not every_host
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


async def test_a_worker_given_no_crawl_id_on_its_stdin_says_so(pg_url: str, tmp_path: Path) -> None:
    worker = await asyncio.create_subprocess_exec(
        *SCRAPER, "worker", "--db", pg_url, "--crawl", "-", *OPTIONS, cwd=tmp_path,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(worker.communicate(b"\x1b[2Jthree\n"), 60)
    assert worker.returncode == 2, err
    assert out == b""  # it joined nothing
    assert err.decode().strip().splitlines() == [
        "scraper: error: worker --crawl -: standard input gave '\\x1b[2Jthree', not a crawl id"
    ]


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


async def test_the_summary_of_a_fleet_is_the_whole_crawl_s(
    site: Served, pg_url: str, tmp_path: Path
) -> None:
    """A crawl and two `scraper worker`s, then `scraper stats`: its counts are the database's,
    its stages and per-host settings every process's merged (each kept in its `workers` row),
    so a host that only another process crawled is there, whichever recorded the crawl's end."""
    first = await start("crawl", *site.roots, "--db", pg_url, *OPTIONS, cwd=tmp_path)
    others = await workers_joined(pg_url, tmp_path, OPTIONS)
    for process in (first, *others):
        code, _, err = await finish(process)
        assert code == 0, err
    await assert_complete(pg_url, site)
    code, out, err = await finish(await start("stats", "--db", pg_url, cwd=tmp_path))
    assert code == 0, err
    ((stored,),) = await rows(pg_url, "SELECT count(*) FROM pages")
    assert f"Crawl 1 finished: {stored} pages" in out
    workers = await rows(pg_url, "SELECT pages, health FROM workers ORDER BY finished_at, id")
    assert sum(pages for pages, _ in workers) == stored and "workers:   3:" in out
    healths = [json.loads(text) for _, text in workers]
    ((counters,),) = await rows(pg_url, "SELECT counters FROM crawls")
    kept = json.loads(counters)
    everyone = {host for h in healths for host in h["hosts"]}
    crawled = {root.split("/")[2] for root in site.roots}
    assert set(kept["hosts"]) == everyone == crawled
    # Some process never held some host: its own figures were not the crawl's.
    assert any(set(h["hosts"]) != crawled for h in healths), healths
    assert kept["stages"] == merge_healths(healths)["stages"]
    assert kept["loop_lag_ms"]["samples"] == sum(h["loop_lag_ms"]["samples"] for h in healths)
    (per_host,) = [line for line in out.splitlines() if line.startswith("  per host:")]
    assert per_host.count(" every ") == min(len(crawled), 5)  # the summary shows five


async def test_the_live_display_counts_the_whole_fleet_s_requests_and_urls(
    pg_url: str, tmp_path: Path, make_config: Any
) -> None:
    """The crawl's process (here, in this test's loop: its snapshot is what its display draws)
    and two workers; one host's pages hang. Once every other host is crawled, what is on the
    wire anywhere is that host's requests, held by the server, whichever process sent them, and
    nothing is left in the frontier: the display's counts, read through the database every few
    seconds, say so, with the processes' number and every process's pages."""
    async with serve(hang=True) as site:
        config = make_config(
            site.roots,
            fetch__per_host_delay=DELAY, fetch__per_host_concurrency=PER_HOST,
            fetch__concurrency=4, fetch__autothrottle=False, fetch__total_timeout=60,
            fetch__retries=0, storage__db=pg_url, storage__lease_ttl=80, storage__batch_size=5,
            storage__flush_interval=0.2, crawl__shutdown_grace=300,
        )  # fmt: skip
        crawler = Crawler(config)
        crawling = asyncio.create_task(crawler.run())
        try:
            await crawler.began.wait()
            others = [
                await start("worker", "--db", pg_url, "--crawl", str(crawler.crawl_id), *PATIENT,
                            cwd=tmp_path)
                for _ in range(2)
            ]  # fmt: skip
            await joined(pg_url, 3, tuple(others))
            crawled = len(site.expected()) - len(SPEC.reachable())  # all but the hanging host's
            deadline = time.monotonic() + DEADLINE
            while (await rows(pg_url, "SELECT count(*) FROM pages"))[0][0] < crawled:
                assert time.monotonic() < deadline, "the other hosts were not crawled"
                await asyncio.sleep(0.1)
            await until(lambda: site.waiting >= 1)
            await asyncio.sleep(2 * GAUGE_PERIOD + 1)  # every process has exchanged since
            held = [port for port, transport in site.held.items() if still_connected(transport)]
            ((pending,),) = await rows(pg_url, "SELECT count(*) FROM frontier WHERE state = 0")
            shown = crawler.snapshot()
            assert shown.processes == 3
            assert shown.in_flight == len(held) >= 1  # the server's count, over the processes
            assert shown.queued == pending == 0
            assert shown.here_in_flight <= shown.in_flight
            assert shown.pages == crawled  # every process's, as the database has them
            site.gate.set()
            for process in others:
                code, _, err = await finish(process)
                assert code == 0, err
            summary = await asyncio.wait_for(crawling, DEADLINE)
        finally:
            site.gate.set()
            if not crawling.done():
                crawler.stop()
                await asyncio.wait([crawling], timeout=DEADLINE)
    assert summary.status == "finished"
    assert summary.pages == len(site.expected())


@pytest.mark.parametrize("victim", ["the crawl's own process", "a worker"])
@pytest.mark.parametrize("after_hits", [15, 60])
async def test_kill_9_of_one_worker_the_others_finish(
    site: Served, pg_url: str, tmp_path: Path, victim: str, after_hits: int
) -> None:
    first = await start("crawl", *site.roots, "--db", pg_url, *OPTIONS, cwd=tmp_path)
    others = await workers_joined(pg_url, tmp_path, OPTIONS)
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
    (worker,) = await workers_joined(pg_url, tmp_path, OPTIONS, count=1)
    for process in (first, worker):
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
    (worker,) = await workers_joined(pg_url, tmp_path, OPTIONS, count=1)
    await until(lambda: site.hits >= 40)
    worker.send_signal(signal.SIGINT)
    code, _, _ = await finish(worker, within=10)  # within the grace, not a lease's TTL
    assert code == 130
    (mine,) = await rows(pg_url, "SELECT id FROM workers WHERE status = 'interrupted'")
    assert await rows(pg_url, "SELECT count(*) FROM hosts WHERE owner = %s", mine[0]) == [(0,)]
    code, _, err = await finish(first)
    assert code == 0, err
    await assert_complete(pg_url, site)


# A grace of 300 s and a request timeout of 60 s: a process that waited for its requests would
# still be waiting when the test gives up.
PATIENT = [*OPTIONS, "--set", "crawl.shutdown_grace=300", "--set", "fetch.total_timeout=60",
           "--set", "storage.lease_ttl=80"]  # fmt: skip


async def test_ctrl_c_cancels_requests_in_flight_and_hands_the_hosts_on_at_once(
    pg_url: str, tmp_path: Path
) -> None:
    """A worker stopped while its requests hang: it does not wait for them (a grace of 300 s,
    a timeout of 60 s): it hangs up, and its hosts, with their politeness state, and its URLs
    go to the others, which finish the crawl. Proved by the order of the server's log."""
    async with serve(hang=True) as site:
        first = await start("crawl", *site.roots, "--db", pg_url, *PATIENT, cwd=tmp_path)
        await until(lambda: site.hits >= 1)
        others = [await start("worker", "--db", pg_url, *PATIENT, cwd=tmp_path) for _ in range(2)]
        await joined(pg_url, 3)  # (a worker that came after the others stopped would not join)
        await until(lambda: site.waiting >= 1)  # a request of the hanging host's owner waits
        ((owner,),) = await rows(pg_url, "SELECT owner FROM hosts WHERE host = %s", site.hanging)
        victim = next(p for p in (first, *others) if f":{p.pid}:" in owner)
        # What waits there is the victim's: the host is its own until it stops. (The host's one
        # known URL is its root, which hangs: it sends no other.)
        mine = [port for port, _ in site.arrivals]
        victim.send_signal(signal.SIGINT)
        code, _, err = await finish(victim)
        assert code == 130, err
        # It ended while the server still held its requests: they were never answered, and
        # the server saw each hang up (a handler cancelled), none answered. (Seen once this
        # loop has run the hang-ups' callbacks; by then the host's next owner may have sent
        # its own request there, which waits too.)
        assert not site.gate.is_set()

        def hung_up() -> list[tuple[str, str, float, float, int]]:
            return [entry for entry in site.abandoned if entry[0] == site.hanging]

        await until(lambda: len(hung_up()) >= len(mine))
        assert sorted(entry[4] for entry in hung_up()) == sorted(mine) != []
        assert await rows(pg_url, "SELECT count(*) FROM hosts WHERE owner = %s", owner) == [(0,)]
        assert await rows(pg_url, "SELECT status FROM workers WHERE id = %s", owner) == [
            ("interrupted",)
        ]
        # It left the host its next start (the epoch: never written).
        assert await rows(
            pg_url, "SELECT next_start > 'epoch' FROM hosts WHERE host = %s", site.hanging
        ) == [(True,)]
        site.gate.set()
        for process in (p for p in (first, *others) if p is not victim):
            code, _, err = await finish(process)
            assert code == 0, err
        await assert_complete(pg_url, site)  # what it held was fetched by the others
        # At the hanging host, every request of another process arrived once each of the
        # victim's connections had hung up: the next owner started only after the old owner's
        # requests were off the wire.
        victims = set(mine)
        later = [connected for port, connected in site.arrivals if port not in victims]
        assert later
        assert all(not victims & set(connected) for connected in later), later
        assert_polite(site)


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


async def test_max_pages_counts_for_the_whole_crawl(
    site: Served, pg_url: str, tmp_path: Path
) -> None:
    limit = 45  # of 120 reachable
    crawl = ["crawl", *site.roots, "--db", pg_url, "--workers", "3", "--max-pages", str(limit)]
    code, _, err = await finish(await start(*crawl, *OPTIONS, cwd=tmp_path))
    assert code == 0, err
    # Exact, whatever the number of processes: URLs are counted out of the crawl's budget as
    # they are leased, and nothing was given back (no process died), so each was fetched once.
    stored = await rows(pg_url, "SELECT count(*), count(DISTINCT url) FROM pages")
    assert stored == [(limit, limit)]
    assert len(site.pages()) == limit
    assert await rows(pg_url, "SELECT taken FROM crawl_rules") == [(limit,)]
    assert await rows(pg_url, "SELECT status FROM crawls") == [("finished",)]
    assert await rows(pg_url, "SELECT count(*) FROM frontier WHERE state = 1") == [(0,)]
    workers = await rows(pg_url, "SELECT status FROM workers")
    assert [status for (status,) in workers] == ["finished"] * 3
    assert_polite(site, every_host=False)  # (45 pages: the first hosts' only, maybe)


async def test_max_pages_per_host_counts_for_the_whole_crawl_even_when_a_worker_dies(
    site: Served, pg_url: str, tmp_path: Path
) -> None:
    cap = 7  # of each host's 20
    options = [*OPTIONS, "--set", f"crawl.max_pages_per_host={cap}"]
    first = await start("crawl", *site.roots, "--db", pg_url, *options, cwd=tmp_path)
    others = await workers_joined(pg_url, tmp_path, options)
    await until(lambda: len(site.pages()) >= 12)
    others[0].kill()  # its leased URLs go back to pending, and to their hosts' budgets
    await others[0].communicate()
    for process in (first, others[1]):
        code, _, err = await finish(process)
        assert code == 0, err
    per_host = await rows(
        pg_url, "SELECT count(*), count(DISTINCT url) FROM pages GROUP BY split_part(url, '/', 3)"
    )
    assert per_host == [(cap, cap)] * len(HOSTS)
    assert await rows(pg_url, "SELECT DISTINCT taken, capped FROM hosts") == [(cap, True)]
    assert await rows(pg_url, "SELECT status FROM crawls") == [("finished",)]
    assert await rows(pg_url, "SELECT count(*) FROM frontier WHERE state = 1") == [(0,)]
    assert_polite(site)


DOMAINS = ["one.test", "two.test", "three.test"]
NAMES = [f"{sub}.{domain}" for domain in DOMAINS for sub in ("a", "b")]  # two hosts a domain


async def test_politeness_by_domain_holds_across_workers(pg_url: str, tmp_path: Path) -> None:
    """fetch.politeness_key = "domain": a domain's hosts are leased together, to one worker at a
    time, so the per-host limits hold per domain across all of them."""
    pairs = zip(NAMES, HOSTS, strict=True)
    resolve = ", ".join(f'"{name}" = "{address}"' for name, address in pairs)
    options = [*OPTIONS, "--set", "fetch.politeness_key=domain",
               "--set", f"fetch.resolve={{{resolve}}}"]  # fmt: skip
    async with serve(names=NAMES) as site:
        crawl = ["crawl", *site.roots, "--db", pg_url, "--workers", "3", *options]
        code, _, err = await finish(await start(*crawl, cwd=tmp_path))
        assert code == 0, err
        await assert_complete(pg_url, site)
        assert_polite(site, slot_of=lambda host: host.split(".", 1)[1])
        groups = await rows(pg_url, "SELECT DISTINCT grp FROM hosts ORDER BY grp")
        assert groups == [(domain,) for domain in sorted(DOMAINS)]


@pytest.mark.parametrize("command", ["crawl --workers 2", "worker"])
async def test_politeness_by_ip_is_refused_with_several_processes(
    site: Served, pg_url: str, tmp_path: Path, command: str
) -> None:
    if command == "worker":  # a crawl to join (one page of it is enough)
        crawl = ["crawl", site.roots[0], "--db", pg_url, *OPTIONS, "--max-pages", "1"]
        assert (await finish(await start(*crawl, cwd=tmp_path)))[0] == 0
    written = "SELECT count(*), sum(n_tup_ins + n_tup_upd) FROM pg_stat_user_tables"
    before = await rows(pg_url, written)
    args = [*command.split(), *([site.roots[0]] if command != "worker" else [])]
    line = [*args, "--db", pg_url, *OPTIONS, "--set", "fetch.politeness_key=ip"]
    code, _, err = await finish(await start(*line, cwd=tmp_path))
    assert code == 2
    assert err.count("\n") == 1 and 'fetch.politeness_key = "ip" cannot hold' in err, err
    assert await rows(pg_url, written) == before  # not a table made, nor a row written


async def test_a_resumed_crawl_counts_what_it_stored_against_max_pages(
    pg_url: str, tmp_path: Path
) -> None:
    limit = 60
    line = ["crawl", "--db", pg_url, "--workers", "2", "--max-pages", str(limit), *PATIENT]
    async with serve(hang=True) as site:
        first = await start(*line, *site.roots, cwd=tmp_path)
        # Pages fetched, and one hanging: leased, so the crawl cannot end before the signal.
        await until(lambda: site.waiting >= 1 and len(site.pages()) >= 10)
        first.send_signal(signal.SIGINT)  # passed on to its worker
        code, _, err = await finish(first)
        assert code == 130, err
        ((stored,),) = await rows(pg_url, "SELECT count(*) FROM pages")
        assert 0 < stored < limit
        site.gate.set()
        code, _, err = await finish(await start(*line, *site.roots, cwd=tmp_path))
        assert code == 0, err
        assert "resuming crawl 1" in err
    assert await rows(pg_url, "SELECT count(*), count(DISTINCT url) FROM pages") == [(limit, limit)]
    assert await rows(pg_url, "SELECT taken FROM crawl_rules") == [(limit,)]
    assert await rows(pg_url, "SELECT status FROM crawls") == [("finished",)]


@pytest.mark.parametrize(
    ("crawl_sets", "worker_sets", "message"),
    [
        (["fetch.politeness_key=ip"], [], 'runs with fetch.politeness_key = "ip"'),
        # (110 of 120: the crawl cannot spend it without leasing pages of the hanging host)
        (["crawl.max_pages=110"], ["crawl.max_pages=500"],
         "crawl.max_pages = 500 here, but crawl 1 runs with 110"),
    ],
)  # fmt: skip
async def test_a_worker_is_refused_a_crawl_run_by_other_rules(
    pg_url: str, tmp_path: Path, crawl_sets: list[str], worker_sets: list[str], message: str
) -> None:
    """The rules that must hold for the whole crawl are the crawl's (as the process that started
    it recorded them): a worker given others, or joining a crawl by IP address (begun by one
    process), is refused in one line before it takes any work."""
    async with serve(hang=True) as site:  # (the crawl runs until the test stops it)
        sets = [item for name in crawl_sets for item in ("--set", name)]
        first = await start("crawl", *site.roots, "--db", pg_url, *PATIENT, *sets, cwd=tmp_path)
        await until(lambda: site.hits >= 1)
        await joined(pg_url, 1)  # it runs (and cannot end: the hanging host's URLs stay leased)
        sets = [item for name in worker_sets for item in ("--set", name)]
        worker = await start("worker", "--db", pg_url, *PATIENT, *sets, cwd=tmp_path)
        code, _, err = await finish(worker)
        assert code == 2, err
        assert err.count("\n") == 1 and message in err, err
        assert await rows(pg_url, "SELECT count(*) FROM workers") == [(1,)]  # the crawl's own
        first.send_signal(signal.SIGINT)
        code, _, err = await finish(first)
        assert code == 130, err
