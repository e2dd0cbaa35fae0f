"""The dispatcher: hand-outs, the end of a crawl, and the tasks it owns (refills, robots.txt,
the crawl's own work such as sitemaps).

The unit tests run it over an in-memory Frontier with workers that answer at once; the crawl
tests at the end run whole crawls against servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence

import pytest

from helpers import Site, base_url, crawl
from scraper.crawl.hosts import HostRules, Limits
from scraper.crawl.scheduler import Assignment, Scheduler
from scraper.errors import StorageError
from scraper.models import CrawlRequest, FetchResult, PageRecord
from scraper.store.base import FrontierState
from scraper.urls import host_key


class MemoryFrontier:
    """The Frontier protocol over a dict, enough for the dispatcher alone."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.pending = {url: CrawlRequest(url) for url in urls}
        self.leased: list[str] = []

    async def seed(self, requests: Sequence[CrawlRequest]) -> None:
        for request in requests:
            self.pending.setdefault(request.url, request)

    async def reset_leases(self) -> int:
        return 0

    async def lease(self, host: str, limit: int) -> list[CrawlRequest]:
        mine = [r for r in self.pending.values() if host_key(r.url) == host][:limit]
        for request in mine:
            del self.pending[request.url]
            self.leased.append(request.url)
        return mine

    async def pending_hosts(self, limit: int) -> list[str]:
        return list(dict.fromkeys(host_key(url) for url in self.pending))[:limit]

    async def count(self, state: FrontierState) -> int:
        return len(self.pending) if state == FrontierState.PENDING else len(self.leased)


class AllowAll:
    delay: float | None = None
    unavailable = False

    def skip_reason(self, url: str) -> str | None:
        return None


class Gate:
    """A HostGate that allows everything and calls `on_rules` the first time a host is met."""

    def __init__(self, on_rules: Callable[[str], None]) -> None:
        self._on_rules = on_rules

    async def rules(self, host: str, sample_url: str) -> HostRules:
        self._on_rules(host)
        return AllowAll()

    def forget(self, sample_url: str) -> None:
        pass


URLS = [f"http://{host}.example/{n}" for host in ("a", "b") for n in range(5)]


async def work(scheduler: Scheduler, handoff: asyncio.Queue[Assignment | None]) -> list[str]:
    """A fetch worker that answers at once and has each page stored at once: the URLs it got."""
    handled = []
    while True:
        scheduler.want_work()
        assignment = await handoff.get()
        if assignment is None:
            return handled
        request = assignment.request
        result = FetchResult(request, fetched_at="", attempts=1, status=200, elapsed_ms=1.0)
        scheduler.fetched(request, result)
        handled.append(request.url)
        await asyncio.sleep(0)
        scheduler.stored([PageRecord(fetch=result)])


async def dispatch(scheduler: Scheduler, workers: int = 3) -> list[str]:
    """Run the dispatcher and its workers to the end: every URL handed out."""
    handoff: asyncio.Queue[Assignment | None] = asyncio.Queue()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(scheduler.run(handoff, workers))
        handed = [tasks.create_task(work(scheduler, handoff)) for _ in range(workers)]
    return [url for task in handed for url in task.result()]


async def test_every_url_is_handed_out_once_and_the_hosts_are_released() -> None:
    frontier = MemoryFrontier(URLS)
    scheduler = Scheduler(frontier, Limits(per_host_concurrency=2), gate=Gate(lambda host: None))
    assert sorted(await dispatch(scheduler)) == sorted(URLS)
    assert frontier.pending == {}
    assert scheduler.handed == len(URLS) and scheduler.in_flight == 0
    assert scheduler.held_hosts() == 0  # no host state kept once a host is idle
    assert set(scheduler.hosts()) == {"a.example", "b.example"}  # but its last settings


async def test_max_pages_ends_the_crawl() -> None:
    frontier = MemoryFrontier(URLS)
    scheduler = Scheduler(frontier, Limits(max_pages=3))
    assert len(await dispatch(scheduler)) == 3


async def test_the_crawl_is_not_over_while_a_crawl_task_runs() -> None:
    ended: list[float] = []

    async def read_sitemaps() -> None:
        await asyncio.sleep(0.2)
        ended.append(time.monotonic())

    def on_rules(host: str) -> None:
        scheduler.start_crawl_task(read_sitemaps(), name=f"sitemaps {host}")

    scheduler = Scheduler(MemoryFrontier(URLS[:1]), Limits(), gate=Gate(on_rules))
    assert await dispatch(scheduler) == URLS[:1]
    assert len(ended) == 1  # dispatch() returned after the task, not before


async def test_a_crawl_task_that_fails_fails_the_dispatcher() -> None:
    async def broken() -> None:
        raise ValueError("a bug in a crawl task")

    def on_rules(host: str) -> None:
        scheduler.start_crawl_task(broken(), name="broken")

    scheduler = Scheduler(MemoryFrontier(URLS), Limits(), gate=Gate(on_rules))
    with pytest.raises(BaseExceptionGroup) as caught:
        await asyncio.wait_for(dispatch(scheduler), 5)
    matched, _ = caught.value.split(ValueError)
    assert matched is not None


async def test_a_refill_that_fails_fails_the_dispatcher() -> None:
    class Broken(MemoryFrontier):
        async def lease(self, host: str, limit: int) -> list[CrawlRequest]:
            raise StorageError("disk full")

    scheduler = Scheduler(Broken(URLS), Limits())
    with pytest.raises(BaseExceptionGroup) as caught:
        await asyncio.wait_for(dispatch(scheduler), 5)
    matched, _ = caught.value.split(StorageError)
    assert matched is not None


async def test_stop_cancels_the_crawl_tasks_still_running() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    def on_rules(host: str) -> None:
        scheduler.start_crawl_task(forever(), name="forever")
        scheduler.stop()

    scheduler = Scheduler(MemoryFrontier(URLS), Limits(), gate=Gate(on_rules))
    await asyncio.wait_for(dispatch(scheduler), 5)  # every worker got its None
    assert cancelled.is_set()


async def test_start_crawl_task_needs_a_running_dispatcher() -> None:
    async def nothing() -> None:
        pass

    scheduler = Scheduler(MemoryFrontier(URLS), Limits())
    with pytest.raises(RuntimeError, match="not running"):
        scheduler.start_crawl_task(nothing(), name="too early")  # closed, never awaited: no warning


# Whole crawls: the per-host limits as a server sees them --------------------------------------


async def test_per_host_delay_and_concurrency_are_never_exceeded(aiohttp_server, make_config):
    site = Site(12, latency=0.25)  # long enough for two to overlap, never three
    server = await aiohttp_server(site.app)
    config = make_config(
        [base_url(server)], fetch__concurrency=16, fetch__per_host_concurrency=2,
        fetch__per_host_delay=0.1, crawl__obey_robots=False,
    )  # fmt: skip
    await crawl(config)
    starts = sorted(t for _, t in site.starts)
    assert len(starts) == 13
    # measured by the server, so allow a few milliseconds of jitter in connecting
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.09
    assert site.most_active == 2


async def test_a_slow_host_does_not_hold_up_a_fast_one(aiohttp_server, make_config):
    """The fast host's pages finish in about the time they take alone while the slow one crawls."""
    fast_alone = Site(20, latency=0.02)
    server = await aiohttp_server(fast_alone.app)
    config = make_config(
        [base_url(server)], fetch__per_host_concurrency=2, crawl__obey_robots=False
    )
    alone = (await crawl(config)).duration_s

    fast, slow = Site(20, latency=0.02), Site(6, latency=2.0)
    fast_server, slow_server = await aiohttp_server(fast.app), await aiohttp_server(slow.app)
    seeds = [base_url(slow_server), base_url(fast_server)]
    config = make_config(
        seeds, fetch__per_host_concurrency=2, fetch__concurrency=4, crawl__obey_robots=False,
        storage__db=str(config.storage.db) + ".both",
    )  # fmt: skip
    run = asyncio.create_task(crawl(config))
    started = time.monotonic()
    await asyncio.wait_for(fast.all_fetched.wait(), 60)
    fast_took = time.monotonic() - started
    await run
    assert len(slow.fetched()) == 7
    assert fast_took <= alone * 1.2 + 0.3  # +0.3 s: start-up (process pool, database) in each


async def test_max_pages_per_host_is_a_cap(aiohttp_server, make_config):
    site = Site(30)
    server = await aiohttp_server(site.app)
    config = make_config([base_url(server)], crawl__max_pages_per_host=10)
    summary = await crawl(config)
    assert summary.pages == 10
    assert len(site.fetched()) == 10
