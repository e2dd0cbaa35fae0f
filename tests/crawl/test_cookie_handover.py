"""A host's cookies outlive its process: across kill -9 and resume (SQLite), and from one worker
of a fleet to the next (PostgreSQL), with real crawl processes.

The site's home page sets the session cookie once only (a second visit would set none), and
links to /hold, which hangs until the test lets it go and then links to pages that need the
cookie. So the pages behind /hold are fetched with the cookie only if the jar of the first
process reached the second."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
import pytest
from aiohttp import web

SCRAPER = [sys.executable, "-m", "scraper"]
COOKIE = "handed-over-" + "session"
OPTIONS = ["--set", "crawl.obey_robots=false", "--set", "crawl.sitemaps=false",
           "--set", "fetch.retries=0", "--set", "fetch.total_timeout=30",
           "--set", "storage.lease_ttl=40", "--set", "storage.flush_interval=0.1",
           "--set", "parse.workers=0", "-q"]  # fmt: skip
pytestmark = pytest.mark.timeout(180)


class HoldingSite:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.held = asyncio.Event()  # /hold was asked for
        self.released = asyncio.Event()  # /hold may answer
        self.cookies: dict[str, str | None] = {}

    def app(self) -> web.Application:
        async def any_path(request: web.Request) -> web.Response:
            self.hits[request.path] += 1
            if request.path == "/":
                response = page(["/hold"])
                if self.hits["/"] == 1:
                    response.set_cookie("sid", COOKIE, path="/")
                return response
            if request.path == "/hold":
                self.held.set()
                await self.released.wait()
                return page(["/members/1", "/members/2"])
            self.cookies[request.path] = request.cookies.get("sid")
            if request.cookies.get("sid") != COOKIE:
                return web.Response(status=403, text="no session")
            return page([])

        app = web.Application()
        app.router.add_get("/{tail:.*}", any_path)
        return app


def page(links: list[str]) -> web.Response:
    body = "".join(f'<a href="{link}">x</a>' for link in links)
    return web.Response(text=f"<title>t</title>{body}", content_type="text/html")


async def start(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *SCRAPER, *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def within(event: asyncio.Event, process: asyncio.subprocess.Process) -> None:
    """Wait for `event`; the process must not end meanwhile."""
    ended = asyncio.ensure_future(process.wait())
    waited = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait({ended, waited}, timeout=90, return_when="FIRST_COMPLETED")
    ended.cancel()
    assert waited in done, (await finish(process)) if ended in done else "timed out"


async def test_cookies_survive_kill_9_and_resume(aiohttp_server, tmp_path: Path) -> None:
    site = HoldingSite()
    server = await aiohttp_server(site.app())
    seed, db = str(server.make_url("/")), tmp_path / "crawl.db"
    first = await start("crawl", seed, "--db", str(db), *OPTIONS, cwd=tmp_path)
    await within(site.held, first)
    first.kill()  # SIGKILL: nothing of the crawl's own runs after it
    await first.wait()
    site.released.set()
    second = await start("crawl", seed, "--db", str(db), *OPTIONS, cwd=tmp_path)
    code, err = await finish(second)
    assert code == 0, err
    assert site.hits["/"] == 1  # the cookie was set once, before the kill
    assert site.cookies == {"/members/1": COOKIE, "/members/2": COOKIE}
    async with aiosqlite.connect(db) as conn:
        statuses = dict(await conn.execute_fetchall("SELECT url, status FROM pages"))
    assert statuses == {
        seed: 200,
        seed + "hold": 200,
        **{f"{seed}members/{n}": 200 for n in (1, 2)},
    }


async def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return await (await conn.execute(sql)).fetchall()


async def test_a_worker_that_takes_a_host_over_takes_its_cookies(
    aiohttp_server, pg_url: str, tmp_path: Path
) -> None:
    """Two processes on one crawl: the first fetches the home page (the cookie) and hangs on
    /hold; a worker joins; Ctrl-C on the first hands the host over at once, and the worker
    fetches the rest with the first one's cookie."""
    site = HoldingSite()
    server = await aiohttp_server(site.app(), host="127.0.0.1")
    seed = str(server.make_url("/"))
    first = await start("crawl", seed, "--db", pg_url, *OPTIONS, cwd=tmp_path)
    await within(site.held, first)
    worker = await start("worker", "--db", pg_url, *OPTIONS, cwd=tmp_path)
    deadline = time.monotonic() + 90
    while (await pg_rows(pg_url, "SELECT count(*) FROM workers"))[0][0] < 2:
        assert time.monotonic() < deadline and worker.returncode is None, "no worker joined"
        await asyncio.sleep(0.05)
    site.released.set()
    first.send_signal(signal.SIGINT)  # in a fleet: its requests cancelled, its hosts handed on
    code, err = await finish(first)
    assert code == 130, err
    code, err = await finish(worker)
    assert code == 0, err
    assert site.hits["/"] == 1
    assert site.cookies == {"/members/1": COOKIE, "/members/2": COOKIE}
    stored = await pg_rows(pg_url, "SELECT pages FROM workers WHERE pages > 0")
    assert len(stored) == 2  # each process stored pages: the host did change hands
