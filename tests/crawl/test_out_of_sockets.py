"""Running out of sockets: the same attempt again after a growing pause, fewer slots; and in a
whole crawl (in a subprocess: the open-files limit is the process's), slower, never an error."""

from __future__ import annotations

import asyncio
import errno
import logging
import subprocess
import sys
import textwrap

import pytest
from aiohttp import web

from helpers import Site, rows
from scraper.crawl.out_of_sockets import OutOfSockets, out_of_sockets, until_sockets
from scraper.crawl.wire import WireSlots
from scraper.models import CrawlRequest, FetchResult


def test_what_counts_as_out_of_sockets() -> None:
    assert out_of_sockets(OSError(errno.EMFILE, "Too many open files"))
    assert out_of_sockets(OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"))
    assert not out_of_sockets(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"))
    assert not out_of_sockets(TimeoutError())


async def test_the_same_attempt_is_made_again_after_a_growing_pause_on_fewer_slots(
    caplog,
) -> None:
    wire = WireSlots(8)
    for _ in range(5):
        await wire.acquire()
    firsts: list[bool] = []
    pauses: list[float] = []

    async def attempt(first: bool) -> FetchResult:
        firsts.append(first)
        if len(firsts) <= 7:
            raise OutOfSockets("Too many open files")
        return FetchResult(request=CrawlRequest("http://127.0.0.1/"), fetched_at="now", attempts=1)

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    with caplog.at_level(logging.WARNING):
        done = await until_sockets(attempt, wire, first=True, url="http://127.0.0.1/", sleep=sleep)
    assert done.attempts == 1
    assert firsts == [True] + [False] * 7  # the dispatcher is told of a first attempt once
    assert pauses == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert wire.limit == 4  # one fewer than the five open
    assert "out of sockets (Too many open files): 5 requests on the wire; at most 4" in caplog.text


# A crawl in which, once it is under way, another part of the process takes every free file
# descriptor for a while: connections cannot be opened ("Too many open files").
HOG = textwrap.dedent(
    """
    import asyncio, json, logging, os, sys
    from scraper.config import build_config
    from scraper.crawl.crawler import Crawler

    names = {f"h{n}.test": "127.0.0.1" for n in range(30)}
    seeds = [f"http://{name}:{sys.argv[1]}/" for name in names]

    class Seen(logging.Handler):
        def __init__(self):
            super().__init__()
            self.event = asyncio.Event()
        def emit(self, record):
            if "out of sockets" in record.getMessage():
                self.event.set()

    async def main():
        logging.basicConfig(level=logging.WARNING)
        seen = Seen()
        logging.getLogger("scraper.crawl.out_of_sockets").addHandler(seen)
        config = build_config({
            "crawl": {"seeds": seeds, "sitemaps": False},
            "fetch": {"concurrency": 8, "resolve": names, "retries": 0, "per_host_delay": 0.1},
            "parse": {"workers": 0},
            "storage": {"db": sys.argv[2]},
        })
        crawler = Crawler(config)
        run = asyncio.create_task(crawler.run())
        while crawler.snapshot().in_flight < 1:  # the hosts after the first request need sockets
            await asyncio.sleep(0.01)
        hogs = []
        try:
            while True:
                hogs.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        try:
            await asyncio.wait_for(seen.event.wait(), 30)
            await asyncio.sleep(0.5)
        finally:
            for fd in hogs:
                os.close(fd)
        summary = await run
        print(json.dumps({"pages": summary.pages, "errors": summary.by_error}))

    asyncio.run(main())
    """
)


class SlowRobots(Site):
    """robots.txt answers in 0.2 s: at 8 requests in flight, 30 hosts' first requests take
    0.8 s at least, so most hosts need their first socket after the hog, however late a busy
    machine lets the script see the crawl's first request."""

    async def robots_txt(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return await super().robots_txt(request)


@pytest.mark.timeout(150)  # a few seconds; far slower on a busy machine
async def test_running_out_of_sockets_slows_the_crawl_and_records_nothing_of_it(
    aiohttp_server, tmp_path
):
    site = SlowRobots(2, latency=0.05)
    server = await aiohttp_server(site.app)
    db = tmp_path / "crawl.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOG, str(server.port), str(db),
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    raw_out, raw_err = await asyncio.wait_for(process.communicate(), 120)
    out, err = raw_out.decode(), raw_err.decode()
    assert process.returncode == 0, err
    assert "out of sockets" in err
    assert out.strip().endswith('{"pages": 90, "errors": {}}')
    assert await rows(db, "SELECT count(*) FROM pages WHERE error_kind IS NOT NULL") == [(0,)]
    assert len(site.fetched()) == 90  # the one server answers all thirty names
