"""A fleet rides out its database: PostgreSQL restarted (fast and immediate modes), cut off from
one process, or down past storage.reconnect_timeout, in the middle of a crawl.

These tests restart the server, so they have one of their own (not the suite's shared one), and
run one after the other in the fleets' group (conftest.py). The site, the processes and the
checks of politeness at the server are test_workers.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from crawl.test_workers import (
    OPTIONS,
    Served,
    assert_complete,
    assert_polite,
    finish,
    reap,  # noqa: F401  (the fixture: what a failed test leaves running is killed)
    rows,
    serve,
    start,
    until,
    workers_joined,
)

from pgserver import PgServer

pytestmark = pytest.mark.timeout(240)

# Room to ride out a restart; leases that outlive one (a restart of this small server took 0.5-3
# s with both cores busy): the lease test below cuts one process off for longer than its lease.
RIDE_OUT = [*OPTIONS, "--set", "storage.reconnect_timeout=60"]
OUTLIVE = [*RIDE_OUT, "--set", "storage.lease_ttl=10"]
_names = itertools.count()


@pytest.fixture(scope="module")
def own_server() -> Iterator[PgServer]:
    """A server these tests may stop and start: not the suite's, which others use meanwhile."""
    with PgServer() as server:
        yield server


@pytest.fixture
def db(own_server: PgServer) -> Iterator[str]:
    name = f"r{next(_names)}"
    url = own_server.address.create_database(name)
    yield url
    with contextlib.suppress(Exception):
        own_server.address.drop_database(name)


@pytest.fixture
async def site() -> AsyncIterator[Served]:
    async with serve() as served:
        yield served


async def restart(server: PgServer, mode: str) -> None:
    """pg_ctl stop -m mode, then start (in a thread: the site's server runs on this loop)."""
    await asyncio.to_thread(server.halt, mode)
    await asyncio.to_thread(server.resume)


@pytest.mark.parametrize(
    ("mode", "restarts", "processes"),
    [("fast", 1, 2), ("immediate", 1, 3), ("fast", 2, 3), ("immediate", 2, 2)],
)
async def test_a_fleet_rides_out_restarts_of_its_database(
    site: Served,
    own_server: PgServer,
    db: str,
    tmp_path: Path,
    mode: str,
    restarts: int,
    processes: int,
) -> None:
    """Restarted once or twice mid-crawl, every process on the crawl pauses and comes back: the
    crawl finishes in this one run, each page fetched once and written once, politely."""
    first = await start("crawl", *site.roots, "--db", db, *OUTLIVE, cwd=tmp_path)
    others = await workers_joined(db, tmp_path, OUTLIVE, count=processes - 1)
    total, began = len(site.expected()), site.hits
    for n in range(restarts):
        await until(lambda n=n: site.hits >= began + (total - began) * (n + 1) // (restarts + 2))
        await restart(own_server, mode)
    said = [await finish(process) for process in (first, *others)]
    for code, _, err in said:
        assert code == 0, err
    await assert_complete(db, site)
    fetched = [(host, path) for host, path, *_ in site.pages()]
    assert sorted(fetched) == sorted(set(fetched)), "a page fetched twice"
    assert len(fetched) == total
    assert_polite(site)
    workers = await rows(db, "SELECT status, pages FROM workers")
    assert [status for status, _ in workers] == ["finished"] * processes
    assert sum(pages for _, pages in workers) == total  # each page written once, by one of them
    for _, _, err in said:
        assert err.count("lost the database") == err.count("back on the database") >= 1, err


async def test_down_past_the_timeout_stops_cleanly_and_resumes_exactly(
    site: Served, own_server: PgServer, db: str, tmp_path: Path
) -> None:
    options = [*OPTIONS, "--set", "storage.reconnect_timeout=1.5"]
    command = ["crawl", *site.roots, "--db", db, "--workers", "2", *options]
    crawl = await start(*command, cwd=tmp_path)
    await until(lambda: site.hits >= 40)
    await asyncio.to_thread(own_server.halt, "fast")
    try:
        code, _, err = await finish(crawl, within=60)
    finally:
        await asyncio.to_thread(own_server.resume)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("scraper: error:")]
    assert len(errors) == 1, err
    assert "did not come back within 1.5 s (storage.reconnect_timeout)" in errors[0]
    assert "Traceback" not in err
    stored_before = {url for (url,) in await rows(db, "SELECT url FROM pages")}
    assert 0 < len(stored_before) < len(site.expected())
    first_run = len(site.log)

    code, _, err = await finish(await start(*command, cwd=tmp_path))
    assert code == 0, err
    await assert_complete(db, site)
    again = {root_path(host, path) for host, path, *_ in site.pages()[first_run:]}
    assert not again & stored_before  # what was stored is not fetched again
    assert_polite(site)


def root_path(host: str, path: str) -> str:
    return f"http://{host}{path}"


@dataclass
class Relay:
    """A TCP relay to the server: `cut()` closes every connection through it and refuses new
    ones until `restore()`."""

    port: int = 0
    pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=list)
    is_cut: bool = False

    def cut(self) -> None:
        self.is_cut = True
        for down, up in self.pairs:
            down.transport.abort()
            up.transport.abort()
        self.pairs.clear()

    def restore(self) -> None:
        self.is_cut = False


@contextlib.asynccontextmanager
async def relay_to(port: int) -> AsyncIterator[Relay]:
    relay = Relay()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if relay.is_cut:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        relay.pairs.append((writer, up_writer))
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(pump(reader, up_writer))
            tasks.create_task(pump(up_reader, writer))

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        relay.cut()
        server.close()


async def test_a_lease_that_expired_while_away_is_not_written_by_its_old_holder(
    site: Served, own_server: PgServer, db: str, tmp_path: Path
) -> None:
    """One process loses the database (its connections cut) for longer than a lease; the
    other takes its hosts over. Back, the first gives them up and drops what it held of them:
    each page is written by one process only (the workers' page counts add up to the pages)."""
    address = own_server.address
    name = urlsplit(db).path.lstrip("/")
    async with relay_to(address.port) as relay:
        relayed = f"postgresql://scraper:{address.password}@127.0.0.1:{relay.port}/{name}"
        first = await start("crawl", *site.roots, "--db", relayed, *RIDE_OUT, cwd=tmp_path)
        (other,) = await workers_joined(db, tmp_path, RIDE_OUT, count=1)
        (me,) = (await rows(db, "SELECT id FROM workers ORDER BY started_at, id LIMIT 1"))[0]
        for _ in range(3000):  # cut it off while it holds hosts (a minute at most)
            if await rows(db, "SELECT 1 FROM hosts WHERE owner = %s AND pending", me):
                break
            await asyncio.sleep(0.02)
        relay.cut()  # the first is away for 5 s: past its leases' 3 s
        await asyncio.sleep(5)
        relay.restore()
        results = [await finish(process) for process in (first, other)]
    for code, _, err in results:
        assert code == 0, err
    first_err = results[0][2]
    assert "host leases lost while the database was away" in first_err, first_err
    await assert_complete(db, site)
    workers = await rows(db, "SELECT pages FROM workers")
    assert sum(pages for (pages,) in workers) == len(site.expected())
    assert_polite(site)


async def test_stats_waits_for_a_restarting_database_and_says_so(
    site: Served, own_server: PgServer, db: str, tmp_path: Path
) -> None:
    """A smart shutdown waits for its clients, meanwhile telling new ones it is shutting down:
    `scraper stats` asks again (through the moments the server is down) until it is back."""
    code, _, err = await finish(
        await start("crawl", site.roots[0], "--db", db, *OPTIONS, cwd=tmp_path)
    )
    assert code == 0, err
    client = await psycopg.AsyncConnection.connect(db)
    marks = [await said(own_server, words) for words in ("smart shutdown", "is shutting down")]
    halting = asyncio.ensure_future(asyncio.to_thread(own_server.halt, "smart"))
    try:
        await server_said(own_server, "smart shutdown", marks[0])
        stats = await start("stats", "--db", db, cwd=tmp_path)
        # It is told the server is shutting down (the server logs each refusal), and waits.
        await server_said(own_server, "is shutting down", marks[1], stats)
    finally:
        await client.close()  # the shutdown goes on, then the server comes back
        await halting
        await asyncio.to_thread(own_server.resume)
    code, out, err = await finish(stats, within=60)
    assert code == 0, err
    assert "the database is restarting (" in err and "Traceback" not in err, err
    assert out.startswith("Crawl 1 finished: ")


async def test_a_crawl_started_while_its_database_restarts_waits_for_it(
    site: Served, own_server: PgServer, db: str, tmp_path: Path
) -> None:
    client = await psycopg.AsyncConnection.connect(db)
    marks = [await said(own_server, words) for words in ("smart shutdown", "is shutting down")]
    halting = asyncio.ensure_future(asyncio.to_thread(own_server.halt, "smart"))
    try:
        await server_said(own_server, "smart shutdown", marks[0])
        crawl = await start("crawl", site.roots[0], "--db", db, *RIDE_OUT, cwd=tmp_path)
        await server_said(own_server, "is shutting down", marks[1], crawl)
    finally:
        await client.close()
        await halting
        await asyncio.to_thread(own_server.resume)
    code, out, err = await finish(crawl)
    assert code == 0, err
    assert "the database is restarting (" in err and "waiting for it up to 60 s" in err, err
    assert out.startswith("Crawl 1 finished: ")


async def said(server: PgServer, words: str) -> int:
    """How many times the server's log says `words` so far (the server is this module's: its
    log has the earlier tests' lines)."""
    return (await asyncio.to_thread(server.log)).count(words)


async def server_said(server: PgServer, words: str, before: int, meanwhile: Any = None) -> None:
    """Wait until the server's log says `words` more than `before` times, while the process
    `meanwhile` has not ended."""
    for _ in range(1200):  # a minute
        if await said(server, words) > before:
            return
        assert meanwhile is None or meanwhile.returncode is None
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server never said {words!r}")
