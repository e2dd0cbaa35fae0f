"""Shared fixtures: a blocking-call guard, the demo site, configs and database helpers."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from aiohttp import web
from blockbuster import BlockBuster, blockbuster_ctx

from scraper.config import Config, build_config
from scraper.crawler import Crawler
from scraper.crawls import CrawlSummary
from scraper.demosite import STATE
from scraper.storage import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose code blocks a running event loop (sync I/O, time.sleep, ...)."""
    with blockbuster_ctx() as guard:
        yield guard


ConfigFactory = Callable[..., Config]


@pytest.fixture
def make_config(tmp_path: Path) -> ConfigFactory:
    """Build a Config from {"section.key": value} pairs, with a fresh database and fast retries."""

    def factory(seeds: list[str], **values: Any) -> Config:
        raw: dict[str, dict[str, Any]] = {
            "crawl": {"seeds": seeds, "sitemaps": False},  # tests of sitemaps turn them on
            "fetch": {"retry_backoff": 0.01, "retry_backoff_max": 0.05, "concurrency": 8},
            "parse": {"workers": 1},
            "storage": {"db": str(tmp_path / "crawl.db"), "batch_size": 50},
        }
        for dotted, value in values.items():
            section, key = dotted.split("__", 1)
            raw.setdefault(section, {})[key] = value
        return build_config(raw)

    return factory


async def crawl(config: Config) -> CrawlSummary:
    return await Crawler(config).run()


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
