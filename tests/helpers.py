"""Helpers the tests share (conftest.py keeps the fixtures): crawl, read rows, run the CLI, and
a small site of linked pages that records when each request came."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from aiohttp import web
from selectolax.lexbor import LexborHTMLParser

from scraper.config import Config
from scraper.crawl.crawler import Crawler
from scraper.demosite import STATE
from scraper.models import CrawlRequest
from scraper.store.base import CrawlSummary, FrontierState
from scraper.store.sqlite.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from scraper.urls import host_key


async def crawl(config: Config) -> CrawlSummary:
    return await Crawler(config).run()


async def crawl_with(config: Config, **options: Any) -> CrawlSummary:
    """A crawl with Crawler options (a resolver, say)."""
    return await Crawler(config, **options).run()


async def rows(db: str | Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with aiosqlite.connect(db) as conn:
        return [tuple(r) for r in await conn.execute_fetchall(sql, params)]


def served(app: web.Application, pages: int) -> asyncio.Event:
    """An event set once the demo-site `app` has served `pages` distinct paths: "the crawl is
    under way", for tests that act in the middle of one."""
    reached = asyncio.Event()

    @web.middleware
    async def notice(request: web.Request, handler: Any) -> web.StreamResponse:
        if len(request.app[STATE].hits) >= pages:
            reached.set()
        return await handler(request)

    app.middlewares.append(notice)
    return reached


def base_url(server: Any) -> str:
    return str(server.make_url("/"))


SCRAPER = [sys.executable, "-m", "scraper"]


async def scraper_cli(*args: str, cwd: Path, **kwargs: Any) -> tuple[int, str, str]:
    """Run the CLI in a subprocess in `cwd` (never the repo: its config.toml names a public site)
    without blocking this test's event loop, which may be serving the site being crawled."""
    process = await asyncio.create_subprocess_exec(
        *SCRAPER, *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def new_database(path: Path) -> sqlite3.Connection:
    """A results database with the current schema and one finished crawl (id 1), made with plain
    sqlite3 for tests that run no event loop; the caller adds pages and closes it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(
        "BEGIN; " + ";".join(MIGRATIONS) + f"; PRAGMA application_id = {APPLICATION_ID}; "
        f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    )
    conn.execute(
        "INSERT INTO crawls (started_at, status, seeds, config, duration_s) "
        "VALUES ('2024-01-01T00:00:00+00:00', 'finished', '[]', '{}', 1.0)"
    )
    return conn


class Site:
    """A small site: /, /p/0 … /p/{n-1} all linked from /, optional robots.txt and latency.
    `starts` holds each request with the moment it came, on the loop's clock (real time, or a
    looptime test's controlled one)."""

    def __init__(self, pages: int = 10, *, robots: Any = None, latency: float = 0.0) -> None:
        self.pages = pages
        self.robots = robots  # str body, int status, or None for 404
        self.latency = latency
        self.starts: list[tuple[str, float]] = []
        self.active = 0
        self.most_active = 0
        self.all_fetched = asyncio.Event()  # set once / and every /p/N were requested
        self._reached: dict[int, asyncio.Event] = {}
        self.app = web.Application()
        self.app.router.add_get("/robots.txt", self.robots_txt)
        self.app.router.add_get("/", self.page)
        self.app.router.add_get("/{path:.+}", self.page)

    async def robots_txt(self, request: web.Request) -> web.Response:
        self.starts.append((request.path, asyncio.get_running_loop().time()))
        if isinstance(self.robots, str):
            return web.Response(text=self.robots)
        return web.Response(status=self.robots if isinstance(self.robots, int) else 404)

    async def page(self, request: web.Request) -> web.Response:
        self.starts.append((request.path_qs, asyncio.get_running_loop().time()))
        if len(self.fetched()) == self.pages + 1:
            self.all_fetched.set()
        for count, event in self._reached.items():
            if len(self.starts) >= count:
                event.set()
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(self.latency)
            links = "".join(f'<a href="/p/{i}">{i}</a>' for i in range(self.pages))
            return web.Response(
                text=f"<title>{request.path}</title>{links}", content_type="text/html"
            )
        finally:
            self.active -= 1

    def fetched(self) -> list[str]:
        return [path for path, _ in self.starts if path != "/robots.txt"]

    def reached(self, requests: int) -> asyncio.Event:
        """An event set once the site has served this many requests."""
        return self._reached.setdefault(requests, asyncio.Event())

    def starts_before(self, moment: float) -> list[str]:
        return [path for path, at in self.starts if at < moment]


class MemoryFrontier:
    """The Frontier protocol over a dict, enough for the dispatcher alone; `max_pages` counts
    leases, as a backend's does."""

    def __init__(self, urls: Sequence[str], max_pages: int = 0) -> None:
        self.pending = {url: CrawlRequest(url) for url in urls}
        self.leased: list[str] = []
        self.max_pages = max_pages

    @property
    def spent(self) -> bool:
        return bool(self.max_pages) and len(self.leased) >= self.max_pages

    def capped(self, host: str) -> bool:
        return False

    def forget(self, host: str) -> None:
        pass

    async def seed(self, requests: Sequence[CrawlRequest]) -> None:
        for request in requests:
            self.pending.setdefault(request.url, request)

    async def reset_leases(self) -> int:
        return 0

    async def lease(self, host: str, limit: int) -> list[CrawlRequest]:
        if self.max_pages:
            limit = min(limit, self.max_pages - len(self.leased))
        mine = [r for r in self.pending.values() if host_key(r.url) == host][:limit]
        for request in mine:
            del self.pending[request.url]
            self.leased.append(request.url)
        return mine

    async def pending_hosts(self, limit: int, after: str = "") -> list[str]:
        return sorted(h for h in {host_key(url) for url in self.pending} if h > after)[:limit]

    async def count(self, state: FrontierState) -> int:
        return len(self.pending) if state == FrontierState.PENDING else len(self.leased)


# A regex that backtracks for ever (~1.6^n steps) on "a" * n + "b", in `re` and in the `regex`
# package alike (which finds `(a+)+$` out at once), and a site with such a page.
BACKTRACKING = "(a|aa)+$"


def backtracking_site(pages: int = 5, served_evil: asyncio.Event | None = None) -> web.Application:
    """/ links to /p/0 … /p/{pages-1} and /evil; every page's <h1> is "ok", but /evil's is 60
    "a"s and a "b": an [extract] rule with BACKTRACKING on h1 would take years on it."""

    async def page(request: web.Request) -> web.Response:
        if request.path in ("/robots.txt", "/sitemap.xml"):
            raise web.HTTPNotFound()
        links = "".join(f'<a href="/p/{i}">{i}</a>' for i in range(pages))
        heading = "a" * 60 + "b" if request.path == "/evil" else "ok"
        if request.path == "/evil" and served_evil is not None:
            served_evil.set()
        body = f'<title>{request.path}</title><h1>{heading}</h1>{links}<a href="/evil">e</a>'
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


# What works in a container as root, with nothing reaching out to the network.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


CHROMIUM = shutil.which("chromium")


def chromium() -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (`make test` installs it)")
    return CHROMIUM


async def rendered_dom(page: Path, profile: Path) -> LexborHTMLParser:
    """The DOM after the page's scripts ran, as headless Chromium dumps it."""
    process = await asyncio.create_subprocess_exec(
        chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
        page.as_uri(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0
    return LexborHTMLParser(out.decode())
