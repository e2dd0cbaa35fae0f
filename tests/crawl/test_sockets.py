"""The process's own resources: the open-files limit raised at start, a socket budget that fits
under it, and running out of sockets mid-crawl slowing the crawl down, never recorded as the
web's error (run in subprocesses: the limits are the process's)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from aiohttp import web

from helpers import Site, rows
from scraper.crawl.sockets import RESERVE, socket_budget


def test_the_soft_open_files_limit_is_raised_to_the_hard_one() -> None:
    script = textwrap.dedent(
        """
        import resource
        from scraper.crawl.sockets import raise_open_files_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        print(raise_open_files_limit() == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "True"


def test_the_socket_budget_fits_under_the_limit(caplog) -> None:
    roomy = socket_budget(concurrency=100, parse_workers=2, open_files=1024)
    assert (roomy.wire, roomy.idle) == (100, 100)
    tight = socket_budget(concurrency=100, parse_workers=2, open_files=RESERVE + 8 + 150)
    assert (tight.wire, tight.idle) == (100, 50)
    tiny = socket_budget(concurrency=100, parse_workers=2, open_files=RESERVE + 8 + 40)
    assert (tiny.wire, tiny.idle) == (40, 0)
    assert "allows 40 requests on the wire, not fetch.concurrency = 100" in caplog.text


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
