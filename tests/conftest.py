"""Shared fixtures: a blocking-call guard and a config factory (helpers.py has the functions)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster, blockbuster_ctx

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
