"""A crawl's health over its processes (store/fleet_health.py): the merge itself, and the crawl's
row keeping every process's (PostgreSQL: each in its `workers` row) or every run's (SQLite)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from scraper.config import StorageConfig
from scraper.crawl.seeds import digest_of
from scraper.models import CrawlRequest
from scraper.store import open_backend, open_results
from scraper.store.base import Backend, HostPoliteness
from scraper.store.fleet_health import merge_healths
from tests.store.test_contract import location, page  # noqa: F401  (location: a fixture)

A, B = "http://127.0.0.1:8001", "http://127.0.0.2:8002"


def health(
    hosts: dict[str, int], *, load: float, busy_s: float, span_s: float, p99: float, stalls: int
) -> dict[str, Any]:
    """A process's health as crawl/crawler.py records it: hosts as name -> concurrency."""
    return {
        "loop_lag_ms": {"p50": 1.0, "p99": p99, "max": p99 * 2, "samples": 100, "stalls": stalls},
        "stages": {
            "fetch": {
                "busy_s": busy_s, "busy_pct": round(busy_s / span_s * 100, 1), "load_pct": load,
                "queue_mean": 2.0, "queue_max": 4, "span_s": span_s,
            }
        },
        "hosts": {
            host: {"queued": 0, "in_flight": 0, "concurrency": c, "delay_s": 0.1, "latency_ms": 3}
            for host, c in hosts.items()
        },
    }  # fmt: skip


WORKED = health({"a.test": 4, "b.test": 2}, load=60.0, busy_s=9.0, span_s=10.0, p99=5.0, stalls=1)
IDLE = health({}, load=0.0, busy_s=0.0, span_s=10.0, p99=2.0, stalls=0)
OTHER = health({"c.test": 8, "b.test": 3}, load=20.0, busy_s=3.0, span_s=10.0, p99=9.0, stalls=2)


def test_the_merge_of_one_health_is_that_health() -> None:
    assert merge_healths([WORKED]) == WORKED
    assert merge_healths([]) == {}


def test_an_idle_process_does_not_dilute_the_stages_of_one_that_worked() -> None:
    """The defect: `crawl --workers 2` showed its idle process's `fetch 0%` as the crawl's."""
    fetch = merge_healths([IDLE, WORKED])["stages"]["fetch"]
    assert fetch["load_pct"] == 60.0  # weighted by busy time: the idle one weighs nothing
    assert fetch["busy_s"] == 9.0 and fetch["span_s"] == 20.0 and fetch["busy_pct"] == 45.0
    assert fetch["queue_mean"] == 2.0 and fetch["queue_max"] == 4


def test_stage_loads_are_weighted_by_busy_time_and_lags_are_the_slowest_process() -> None:
    merged = merge_healths([WORKED, OTHER])
    fetch = merged["stages"]["fetch"]
    assert fetch["load_pct"] == round((60 * 9 + 20 * 3) / 12, 1)
    assert fetch["busy_s"] == 12.0
    lag = merged["loop_lag_ms"]
    assert (lag["p99"], lag["max"], lag["samples"], lag["stalls"]) == (9.0, 18.0, 200, 3)


def test_hosts_are_united_and_the_last_to_end_has_the_last_word() -> None:
    hosts = merge_healths([WORKED, OTHER])["hosts"]
    assert {host: h["concurrency"] for host, h in hosts.items()} == {
        "a.test": 4,
        "b.test": 3,  # OTHER ended after WORKED
        "c.test": 8,
    }


def test_merging_merged_healths_gives_the_merge_of_them_all() -> None:
    """SQLite merges the runs so far (one health in its row) with the next run's."""
    at_once = merge_healths([WORKED, IDLE, OTHER])
    assert merge_healths([merge_healths([WORKED, IDLE]), OTHER]) == at_once


async def a_run(b: Backend, crawl_id: int, url: str, status: str, extra: dict[str, Any]) -> None:
    """One process's run on the crawl: it claims the host, stores its page and ends."""
    await b.frontier(crawl_id).reset_leases()
    leases = b.leases(crawl_id, ttl=60, margin=1)
    (grant,) = await leases.claim(10)
    (request,) = await b.frontier(crawl_id).lease(grant.host, 10)
    assert request.url == url
    await b.pages(crawl_id).write([page(url)])
    await leases.release(HostPoliteness(grant.host))
    await leases.close(status)
    await b.crawls.finish(crawl_id, status, 1.0, extra=extra)


async def test_the_crawls_row_keeps_every_run_s_health_merged(location: str) -> None:  # noqa: F811
    """A process (or, on SQLite, a run) whose hosts the one that recorded the crawl's end never
    held still has them in the crawl's summary."""
    first = health({"a.test": 4}, load=60.0, busy_s=9.0, span_s=10.0, p99=5.0, stalls=1)
    second = health({"c.test": 8}, load=20.0, busy_s=3.0, span_s=10.0, p99=9.0, stalls=2)
    config = StorageConfig(db=location)
    async with open_backend(config) as b:
        crawl_id = await b.crawls.start(digest_of([f"{A}/"]), "{}")
        await b.frontier(crawl_id).seed([CrawlRequest(url=f"{A}/")])
        await a_run(b, crawl_id, f"{A}/", "interrupted", first)
    async with open_backend(config) as b:  # another process, which resumes it
        await b.crawls.reopen(crawl_id)
        await b.frontier(crawl_id).seed([CrawlRequest(url=f"{B}/")])
        await a_run(b, crawl_id, f"{B}/", "finished", second)

    def counters() -> dict[str, Any]:
        with open_results(location) as r:
            return dict(json.loads(r.find_crawl(crawl_id).counters or "{}"))

    kept = await asyncio.to_thread(counters)
    assert kept["hosts"].keys() == {"a.test", "c.test"}
    assert kept["stages"] == merge_healths([first, second])["stages"]
    assert kept["loop_lag_ms"]["stalls"] == 3
    assert kept["by_status"] == {"2xx": 2}


async def test_a_worker_that_ends_after_the_crawl_was_recorded_joins_its_summary(
    pg_url: str,
) -> None:
    """Two processes on one crawl (PostgreSQL): the first to find it over records its end; the
    other, ending later, still merges its health into the crawl's row."""
    config = StorageConfig(db=pg_url)
    first = health({"a.test": 4}, load=60.0, busy_s=9.0, span_s=10.0, p99=5.0, stalls=1)
    second = health({"c.test": 8}, load=20.0, busy_s=3.0, span_s=10.0, p99=9.0, stalls=2)
    async with open_backend(config) as one, open_backend(config) as two:
        crawl_id = await one.crawls.start(digest_of([f"{A}/", f"{B}/"]), "{}")
        await one.frontier(crawl_id).seed([CrawlRequest(url=f"{A}/"), CrawlRequest(url=f"{B}/")])
        await one.frontier(crawl_id).reset_leases()
        await two.join(crawl_id)
        one_leases = one.leases(crawl_id, ttl=60, margin=1)
        two_leases = two.leases(crawl_id, ttl=60, margin=1)
        (a,) = await one_leases.claim(1)
        (b,) = await two_leases.claim(1)
        for backend, leases, grant in ((one, one_leases, a), (two, two_leases, b)):
            (request,) = await backend.frontier(crawl_id).lease(grant.host, 10)
            await backend.pages(crawl_id).write([page(request.url)])
            await leases.release(HostPoliteness(grant.host))
        await one_leases.close("finished")
        await one.crawls.finish(crawl_id, "finished", 1.0, extra=first)
        await two_leases.close("finished")
        await two.crawls.finish(crawl_id, "finished", 1.0, extra=second)

    def read() -> tuple[dict[str, Any], list[tuple[str, int, str]]]:
        with open_results(pg_url) as r:
            row = r.find_crawl(crawl_id)
            return json.loads(row.counters or "{}"), r.worker_shares(crawl_id)

    kept, shares = await asyncio.to_thread(read)
    assert kept["hosts"].keys() == {"a.test", "c.test"}
    assert kept["loop_lag_ms"]["p99"] == 9.0 and kept["loop_lag_ms"]["stalls"] == 3
    assert kept["by_status"] == {"2xx": 2}  # the first one's record of the end is kept
    assert sorted(pages for _, pages, _ in shares) == [1, 1]


async def test_each_process_reads_the_others_gauges_and_the_crawl_s_pending_urls(
    pg_url: str,
) -> None:
    """The live display's counts in a fleet (crawl/gauges.py): the other processes' gauges, as
    they last published them, and the frontier's pending URLs; a stopped process counts no more.
    """
    config = StorageConfig(db=pg_url)
    seeds = [f"{A}/", f"{A}/2", f"{B}/", f"{B}/2", f"{B}/3"]
    async with open_backend(config) as one, open_backend(config) as two:
        crawl_id = await one.crawls.start(digest_of(seeds), "{}")
        await one.frontier(crawl_id).seed([CrawlRequest(url=url) for url in seeds])
        await one.frontier(crawl_id).reset_leases()
        await two.join(crawl_id)
        one_leases, two_leases = (b.leases(crawl_id, ttl=60, margin=1) for b in (one, two))
        (a,) = await one_leases.claim(1)  # (each process registers at its first claim)
        (b,) = await two_leases.claim(1)
        taken = await one.frontier(crawl_id).lease(a.host, 10)  # its queue: leased, not pending
        alone = await one.gauges(crawl_id).exchange(len(taken), 1, count_pending=True)
        assert (alone.others, alone.queued, alone.in_flight) == (0, 0, 0)  # two has said nothing
        await two.gauges(crawl_id).exchange(3, 2, count_pending=False)
        load = await one.gauges(crawl_id).exchange(len(taken), 1, count_pending=True)
        assert (load.others, load.queued, load.in_flight, load.stored) == (1, 3, 2, 0)
        (request,) = await two.frontier(crawl_id).lease(b.host, 1)
        await two.pages(crawl_id).write([page(request.url)])
        load = await one.gauges(crawl_id).exchange(len(taken), 1, count_pending=True)
        assert load.stored == 1  # the pages the others stored, as their rows count them
        assert (load.pending, load.pending_capped) == (len(seeds) - len(taken) - 1, False)
        assert (await two.gauges(crawl_id).exchange(0, 0, count_pending=False)).pending is None
        await two_leases.close("interrupted", [HostPoliteness(b.host)])
        load = await one.gauges(crawl_id).exchange(len(taken), 1, count_pending=True)
        assert (load.others, load.queued, load.in_flight, load.stored) == (0, 0, 0, 1)
        await one_leases.close("finished")
