"""The keep-alive budget alone, on times passed in: which connections may stay open, idle."""

from __future__ import annotations

import asyncio

from scraper.crawl.hosts import ALLOW_ALL, HostState, Limits, Slot
from scraper.crawl.keep_alive import KEEP_HORIZON, KeepAlive
from scraper.models import CrawlRequest


def host(name: str, *, queued: int = 1, next_start: float = 0.0) -> HostState:
    state = HostState(name)
    state.slot, state.rules = Slot(name, Limits()), ALLOW_ALL
    state.slot.next_start = next_start
    state.queue.extend(CrawlRequest(f"http://{name}/{n}") for n in range(queued))
    return state


def test_a_connection_stays_open_only_for_a_host_with_work_soon_and_within_the_budget() -> None:
    keep = KeepAlive(2)
    assert not keep.may_keep(None, 0.0)  # a host not held
    assert not keep.may_keep(host("idle", queued=0), 0.0)  # nothing queued
    assert not keep.may_keep(host("later", next_start=KEEP_HORIZON + 1.0), 0.0)  # not soon
    busy, other, third = host("busy"), host("other"), host("third")
    assert keep.may_keep(busy, 0.0) and keep.may_keep(busy, 0.0)
    assert not keep.may_keep(other, 0.0)  # the budget is spent
    assert (keep.kept, busy.idle_kept, other.idle_kept) == (2, 2, 0)
    keep.reused(busy)  # its next request takes one
    assert keep.may_keep(third, 0.0)
    assert (keep.kept, busy.idle_kept, third.idle_kept) == (2, 1, 1)


def test_a_released_host_gives_its_kept_connections_back_to_the_budget() -> None:
    keep = KeepAlive(3)
    busy = host("busy")
    keep.may_keep(busy, 0.0)
    keep.may_keep(busy, 0.0)
    keep.released(busy)
    assert (keep.kept, busy.idle_kept) == (0, 0)
    keep.reused(busy)  # nothing kept for it: nothing taken
    assert keep.kept == 0


async def test_a_host_with_a_job_waiting_keeps_its_connection() -> None:
    keep = KeepAlive(1)
    robots = host("robots", queued=0)
    robots.jobs.append(("http://robots/robots.txt", asyncio.get_running_loop().create_future()))
    assert keep.may_keep(robots, 0.0)
