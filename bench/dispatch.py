"""The dispatcher's cost per hand-out against the number of hosts: `-m bench.dispatch`.

The scheduler alone, over an in-memory frontier of `hosts` hosts with `pages` URLs each, and
workers that answer at once: no network, no database, no parsing. What is left is the
dispatcher's own work per request (picking the slot, its refills, releasing idle hosts, paging
hosts in from the frontier), which must not grow with the number of hosts. CPU time per
hand-out, the best of a few runs (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from scraper.crawl.hosts import Limits
from scraper.crawl.scheduler import Assignment, Scheduler
from scraper.models import CrawlRequest, FetchResult, PageRecord
from scraper.store.base import FrontierState
from scraper.store.sqlite.leases import SqliteHostLeases


class MemoryFrontier:
    """The Frontier protocol in memory, each call O(log hosts) at most."""

    def __init__(self, hosts: int, pages: int) -> None:
        self._urls = {
            f"h{n}.example": [CrawlRequest(f"http://h{n}.example/{p}") for p in range(pages)]
            for n in range(hosts)
        }
        self._hosts = sorted(self._urls)

    async def seed(self, requests: Sequence[CrawlRequest]) -> None:
        pass

    async def reset_leases(self) -> int:
        return 0

    async def lease(self, host: str, limit: int) -> list[CrawlRequest]:
        urls = self._urls.get(host, [])
        taken, self._urls[host] = urls[:limit], urls[limit:]
        if not self._urls[host]:
            del self._urls[host]  # (and left in the sorted list, skipped: deleting from it
            # would cost a memmove of the whole list, ~30 µs at 100,000 hosts)
        return taken

    async def pending_hosts(self, limit: int, after: str = "") -> list[str]:
        found: list[str] = []
        index = bisect.bisect_right(self._hosts, after)
        while len(found) < limit and index < len(self._hosts):
            if self._hosts[index] in self._urls:
                found.append(self._hosts[index])
            index += 1
        return found

    async def count(self, state: FrontierState) -> int:
        return 0

    spent = False  # (no page budget)

    def capped(self, host: str) -> bool:
        return False

    def forget(self, host: str) -> None:
        pass


Fetch = Callable[[CrawlRequest], Awaitable[FetchResult]]


def answered(request: CrawlRequest, **fields: Any) -> FetchResult:
    """A fetch's result for `request`: a 200 in a millisecond, unless `fields` say otherwise."""
    fields.setdefault("status", 200)
    fields.setdefault("elapsed_ms", 1.0)
    return FetchResult(request, fetched_at="", attempts=1, **fields)


async def fetch_worker(
    scheduler: Scheduler,
    handoff: asyncio.Queue[Assignment | None],
    fetch: Fetch | None = None,
    to_sink: float | None = None,
) -> list[str]:
    """A fetch worker of the dispatcher alone (this benchmark, its tests): each request handed
    to it is `fetch`ed (answered at once without one), and stored `to_sink` seconds later
    (None: at once, without giving others a turn); the URLs it got, until the dispatcher says
    the crawl is over."""
    got: list[str] = []
    while True:
        scheduler.want_work()
        assignment = await handoff.get()
        if assignment is None:
            return got
        request = assignment.request
        result = answered(request) if fetch is None else await fetch(request)
        scheduler.fetched(request, result)
        got.append(request.url)
        if to_sink is not None:
            await asyncio.sleep(to_sink)
        scheduler.stored([PageRecord(fetch=result)])


async def run_dispatcher(
    scheduler: Scheduler, workers: int, fetch: Fetch | None = None, to_sink: float | None = None
) -> list[str]:
    """Run the dispatcher and `workers` fetch workers (`fetch_worker`) to the crawl's end:
    every URL handed out."""
    handoff: asyncio.Queue[Assignment | None] = asyncio.Queue()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(scheduler.run(handoff, workers))
        handed = [
            tasks.create_task(fetch_worker(scheduler, handoff, fetch, to_sink))
            for _ in range(workers)
        ]
    return [url for task in handed for url in task.result()]


async def dispatch(hosts: int, pages: int, workers: int) -> tuple[int, float]:
    """Hand-outs made and CPU seconds they took."""
    frontier = MemoryFrontier(hosts, pages)
    # The frontier's objects (a real one lives in SQLite) out of the garbage collector's sight,
    # as `scraper crawl` does with its start-up objects: else each collection walks them all,
    # and the cost per hand-out grows with the benchmark's own data.
    gc.collect()
    gc.freeze()
    leases = SqliteHostLeases(frontier)  # one process's leases, in memory
    scheduler = Scheduler(frontier, Limits(per_host_concurrency=1), leases=leases)
    started = time.process_time()
    await run_dispatcher(scheduler, workers)
    spent = time.process_time() - started
    gc.unfreeze()
    return scheduler.handed, spent


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="100,1000,10000,100000")
    parser.add_argument("--pages", type=int, default=2, help="URLs per host")
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print("| hosts | hand-outs | µs per hand-out (best of rounds) | each round |")
    print("| ---: | ---: | ---: | --- |")
    for hosts in (int(h) for h in args.hosts.split(",")):
        runs = [asyncio.run(dispatch(hosts, args.pages, args.workers)) for _ in range(args.rounds)]
        per = [cpu / handed * 1e6 for handed, cpu in runs]
        each = " ".join(f"{p:.1f}" for p in per)
        print(f"| {hosts:,} | {runs[0][0]:,} | {min(per):.1f} | {each} |", flush=True)


if __name__ == "__main__":
    main()
