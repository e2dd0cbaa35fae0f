"""Shared fixtures: a blocking-call guard, a config factory, and a PostgreSQL server for the
session with a fresh database per test (helpers.py has the functions).

Under pytest-xdist (`make test` runs `-n 3`) the controller starts the one PostgreSQL server and
hands its address to the workers: one initdb for the run, not one per worker, and stopped once
every worker is done. Each test still gets a database of its own, named after the worker and
the test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from proxyserver import PROXY_PASSWORD, PROXY_USER, ForwardProxy, tinyproxy

from pgserver import PgAddress, PgServer, PgServerError
from scraper.config import Config, build_config


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose code blocks a running event loop (sync I/O, time.sleep, ...)."""
    with blockbuster_ctx() as guard:
        # pytest-timeout prints every thread's stack from a signal handler, often while the loop
        # runs: the stacks of a test that hangs are the one thing to see, never a BlockingError.
        for write in ("io.TextIOWrapper.write", "io.BufferedWriter.write", "os.write"):
            guard.functions[write].can_block_in("pytest_timeout.py", "dump_stacks")
        yield guard


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """looptime (the scheduler tests' controlled clock) asks the event-loop policy for its loop
    before every test, which in a sync test with no loop set makes one and leaves it open (a
    ResourceWarning, an error here, in whichever later test the collector runs). Such a test
    gets a loop of its own, closed after it."""
    policy = pyfuncitem.funcargs.get("event_loop_policy")
    unset = getattr(getattr(policy, "_local", None), "_loop", "?") is None  # (no public way)
    if policy is None or inspect.iscoroutinefunction(pyfuncitem.obj) or not unset:
        return (yield)
    loop = asyncio.new_event_loop()
    policy.set_event_loop(loop)
    try:
        return (yield)
    finally:
        policy.set_event_loop(None)
        loop.close()


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
            if "__" not in dotted:  # a top-level table such as [[auth]]
                raw[dotted] = value
                continue
            section, key = dotted.split("__", 1)
            raw.setdefault(section, {})[key] = value
        return build_config(raw)

    return factory


# Under xdist, the tests of a file named here run on one worker, one after the other (`--dist
# loadgroup`), beside the rest. test_workers.py starts fleets of three crawl processes and checks
# what they did in time: a worker joins while the first still has pages to hand out, a kill lands
# mid-crawl. Two such tests at once on 2 cores broke that (a joining worker, still starting, found
# the site crawled by the first), where one at a time, beside the rest of the suite, holds.
# bench/test_bench.py's tests share a module's site and server: one worker builds them once.
ONE_AT_A_TIME = {
    "crawl/test_workers.py": "fleets",
    "crawl/test_spider_fleet.py": "fleets",
    "crawl/test_cookie_handover.py": "fleets",
    "bench/test_bench.py": "bench-site",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        group = ONE_AT_A_TIME.get(item.path.relative_to(tests).as_posix())
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


# The controller's server, or why it could not start: for the workers (pytest_configure_node).
SHARED_PG = pytest.StashKey["PgServer | str"]()
SHARED_PG_LIFE = pytest.StashKey[contextlib.ExitStack]()
PG_INPUT = "pg_address"  # its key in each worker's `workerinput`


def _distributes(config: pytest.Config) -> bool:
    """True in the controller of an xdist run (`-n N`, N > 0), not in its workers."""
    return getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _distributes(config):
        life = config.stash[SHARED_PG_LIFE] = contextlib.ExitStack()
        try:
            config.stash[SHARED_PG] = life.enter_context(PgServer())
        except PgServerError as exc:  # the tests that use it fail with this; the rest run
            config.stash[SHARED_PG] = str(exc)


def pytest_unconfigure(config: pytest.Config) -> None:
    if SHARED_PG_LIFE in config.stash:
        config.stash[SHARED_PG_LIFE].close()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist's hook, in the controller, for each worker it starts: the shared server's address."""
    shared = node.config.stash[SHARED_PG]
    node.workerinput[PG_INPUT] = (
        dataclasses.asdict(shared.address) if isinstance(shared, PgServer) else shared
    )


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgAddress]:
    """A PostgreSQL server of our own for the whole session (Debian's binaries, initdb into a
    temporary folder, a Unix socket there): the xdist controller's, or one this process starts.
    One that cannot start fails the tests that use it: CI must run them, so they are never
    skipped."""
    shared = getattr(request.config, "workerinput", {}).get(PG_INPUT)
    if isinstance(shared, str):
        raise PgServerError(shared)
    if shared is not None:
        yield PgAddress(**shared)
        return
    with PgServer() as server:
        yield server.address


_databases = itertools.count()


@pytest.fixture
def pg_url(pg_server: PgAddress, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of its own for this test: its URL (password included).

    Never dropped: the server and its folder go at the end of the session. PostgreSQL 15's DROP
    DATABASE waits until every backend of the server has closed its files, and a backend stuck
    under a hung test's crawl held every other test's DROP on the shared server for up to a
    minute; a test database is a few MB of a temporary folder."""
    test = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40].lower()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    return pg_server.create_database(f"t_{worker}_{next(_databases)}_{test}")


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """End what a test left running: the crawl processes of a test that timed out would go on
    writing to its database and fetching from addresses that later tests serve. Only processes
    the test started: a fixture's server of a wider scope (PostgreSQL, nginx) lives on."""
    before = {process.pid for process in psutil.Process().children(recursive=True)}
    yield
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(leftovers, timeout=10)


@pytest.fixture
def good_proxy(tmp_path: Path) -> Iterator[ForwardProxy]:
    """tinyproxy on 127.0.0.1, wanting PROXY_USER and PROXY_PASSWORD (tests/proxyserver.py)."""
    with tinyproxy(tmp_path, "good", PROXY_USER, PROXY_PASSWORD) as proxy:
        yield proxy
