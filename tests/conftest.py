"""Shared fixtures: a blocking-call guard, a config factory, and a PostgreSQL server for the
session with a fresh database per test (helpers.py has the functions)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

from pgserver import PgServer
from scraper.config import Config, build_config


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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server of our own for the whole session (Debian's binaries, initdb into a
    temporary folder, a Unix socket there). One that cannot start fails the tests that use it:
    CI must run them, so they are never skipped."""
    with PgServer() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database of its own for this test: its URL (password included)."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    name += f"_{id(request) % 100_000}"
    yield pg_server.create_database(name)
    pg_server.drop_database(name)
