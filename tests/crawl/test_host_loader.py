"""The host loader: hosts taken on, their queues refilled from the frontier, leased requests
admitted (queued, or free when they need no fetch), robots.txt rules before requests go out.

Over an in-memory Frontier and SQLite's in-memory host leases (one process), with the loader's
tasks in a TaskGroup of the test's and a HostGate whose rules the test gives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from helpers import MemoryFrontier
from scraper.crawl.host_loader import Assignment, HostLoader
from scraper.crawl.host_window import HostWindow
from scraper.crawl.hosts import HostState, HostTable, Limits
from scraper.crawl.ledger import Ledger
from scraper.crawl.ports import HostRules
from scraper.crawl.ready import ReadyHeap
from scraper.models import CrawlRequest, ErrorKind
from scraper.store.base import HostPoliteness
from scraper.store.sqlite.leases import SqliteHostLeases


@dataclass
class Rules:
    """robots.txt rules: `disallow` is a path prefix ruled out; `delay` a Crawl-delay."""

    disallow: str | None = None
    delay: float | None = None
    unavailable: bool = False
    skip_kind: ErrorKind = ErrorKind.ROBOTS

    def skip_reason(self, url: str) -> str | None:
        path = "/" + url.split("/", 3)[3]
        if self.disallow is not None and path.startswith(self.disallow):
            return "disallowed by robots.txt"
        return None


@dataclass
class Gate:
    """A HostGate answering `rules` once `open` is set; `asked`: the hosts it was asked for."""

    rules: Rules = field(default_factory=Rules)
    open: asyncio.Event = field(default_factory=asyncio.Event)
    asked: list[str] = field(default_factory=list)

    async def settled_rules(self, host: str, sample_url: str) -> HostRules:
        self.asked.append(host)
        await self.open.wait()
        return self.rules

    async def adopt(self, record: str) -> None:
        pass


@dataclass
class Loading:
    """A loader with the bookkeeping it shares with the dispatcher, and what it told it."""

    loader: HostLoader
    hosts: HostTable
    ready: ReadyHeap
    ledger: Ledger
    window: HostWindow
    frontier: MemoryFrontier
    idle_checks: list[str]

    def free(self) -> list[Assignment]:
        return [assignment for _, assignment in self.loader.free]


@asynccontextmanager
async def loading(
    frontier: MemoryFrontier, limits: Limits, gate: Gate | None = None
) -> AsyncIterator[Loading]:
    """A loader whose tasks run in a TaskGroup closed (waited for) at the block's end."""
    hosts, ready, ledger = HostTable(limits), ReadyHeap(), Ledger()
    leases = SqliteHostLeases(frontier)
    window = HostWindow(hosts, leases, frontier, size=limits.host_window, concurrency=4)
    idle_checks: list[str] = []
    async with asyncio.TaskGroup() as tasks:

        def start(work: Coroutine[Any, Any, None], name: str) -> None:
            tasks.create_task(work, name=name)

        def release_if_idle(host: HostState) -> None:
            idle_checks.append(host.name)

        loader = HostLoader(
            frontier, limits, hosts=hosts, ready=ready, ledger=ledger, window=window,
            start=start, release_if_idle=release_if_idle, gate=gate,
        )  # fmt: skip
        yield Loading(loader, hosts, ready, ledger, window, frontier, idle_checks)


async def settle() -> None:
    """Let the loader's tasks run as far as they can."""
    for _ in range(10):
        await asyncio.sleep(0)


def urls_of(host: str, count: int) -> list[str]:
    return [f"http://{host}/{n}" for n in range(count)]


async def test_a_granted_host_is_refilled_to_its_buffer_and_ready() -> None:
    """Two requests at once per host: four are kept queued (twice that), the rest stay in the
    frontier; the host is in the ready heap, joined to its slot, and counted as maybe pending."""
    frontier = MemoryFrontier(urls_of("a.test", 10))
    async with loading(frontier, Limits(per_host_concurrency=2)) as at:
        at.loader.granted([HostPoliteness("a.test")], now=0.0)
        at.loader.start_refills()
        await settle()
    host = at.hosts.get("a.test")
    assert host is not None and host.slot is not None
    assert [r.url for r in host.queue] == urls_of("a.test", 4)
    assert at.ledger.queued == 4 and len(frontier.pending) == 6
    assert at.loader.pending_hosts == 1  # it has more in the table
    slot, picked, _ = at.ready.pick(0.0)
    assert picked is host and slot is host.slot
    assert at.idle_checks == ["a.test"]  # told once its refill ended


async def test_a_refill_that_finds_fewer_than_asked_ends_the_hosts_pending() -> None:
    frontier = MemoryFrontier(urls_of("a.test", 2))
    async with loading(frontier, Limits(per_host_concurrency=2)) as at:
        at.loader.granted([HostPoliteness("a.test")], now=0.0)
        at.loader.start_refills()
        await settle()
    host = at.hosts.get("a.test")
    assert host is not None and len(host.queue) == 2
    assert not host.maybe_pending and at.loader.pending_hosts == 0


async def test_a_taken_request_below_half_the_buffer_brings_a_refill() -> None:
    frontier = MemoryFrontier(urls_of("a.test", 10))
    async with loading(frontier, Limits(per_host_concurrency=2)) as at:
        at.loader.granted([HostPoliteness("a.test")], now=0.0)
        at.loader.start_refills()
        await settle()
        host = at.hosts.get("a.test")
        assert host is not None
        for _ in range(3):  # 4 -> 1 queued: under half of 4
            host.queue.popleft()
            at.ledger.queued -= 1
        at.loader.want_refill(host)
        at.loader.start_refills()
        await settle()
    assert len(host.queue) == 4  # topped up to the buffer
    assert len(frontier.pending) == 3


async def test_refills_wait_while_memory_is_full() -> None:
    """crawl.queue_size = 3 requests in memory: the first host's refill takes them all, the
    second's waits until requests are taken. (A bound checked as refills start, not as they
    end: two started together may both take the room.)"""
    frontier = MemoryFrontier(urls_of("a.test", 5) + urls_of("b.test", 5))
    async with loading(frontier, Limits(per_host_concurrency=2, queue_size=3)) as at:
        at.loader.granted([HostPoliteness("a.test")], now=0.0)
        at.loader.start_refills()
        await settle()
        at.loader.granted([HostPoliteness("b.test")], now=0.0)
        at.loader.start_refills()
        await settle()
        assert at.ledger.queued == 3 and len(frontier.pending) == 7
        a, b = at.hosts.get("a.test"), at.hosts.get("b.test")
        assert a is not None and len(a.queue) == 3
        assert b is not None and not b.queue
        a.queue.clear()  # handed out
        at.ledger.queued = 0
        at.loader.start_refills()  # (the refill queued for b.test)
        await settle()
    assert len(b.queue) == 3


async def test_fresh_and_disallowed_requests_need_no_fetch_and_go_free() -> None:
    """A request stored recently enough is free (recorded as such, not fetched), and so is one
    robots.txt disallows, with its reason and kind; the rest are queued, once the rules are in:
    before, none is ready to go out."""
    frontier = MemoryFrontier([])
    frontier.pending = {
        "http://a.test/fresh": CrawlRequest("http://a.test/fresh", fresh=True),
        "http://a.test/private/1": CrawlRequest("http://a.test/private/1"),
        "http://a.test/public": CrawlRequest("http://a.test/public"),
    }
    gate = Gate(Rules(disallow="/private"))
    async with loading(frontier, Limits(per_host_concurrency=2), gate) as at:
        at.loader.granted([HostPoliteness("a.test")], now=0.0)
        at.loader.start_refills()
        await settle()
        host = at.hosts.get("a.test")
        assert host is not None and host.gating and host.rules is None
        assert gate.asked == ["a.test"]
        assert at.ready.pick(0.0)[1] is None  # waits for its rules
        assert [a.request.url for a in at.free()] == ["http://a.test/fresh"]
        gate.open.set()
        await settle()
    assert [r.url for r in host.queue] == ["http://a.test/public"]
    skipped = at.free()[1]
    assert skipped.request.url == "http://a.test/private/1"
    assert skipped.skip_reason == "disallowed by robots.txt"
    assert skipped.skip_kind is ErrorKind.ROBOTS
    assert at.ledger.queued == 3  # queued and free alike, until handed out


async def test_a_crawl_delay_raises_the_slots_delay() -> None:
    frontier = MemoryFrontier(urls_of("a.test", 2))
    gate = Gate(Rules(delay=2.5))
    gate.open.set()
    async with loading(frontier, Limits(per_host_delay=0.5), gate) as at:
        at.loader.granted([HostPoliteness("a.test")], now=0.0)
        at.loader.start_refills()
        await settle()
    host = at.hosts.get("a.test")
    assert host is not None and host.slot is not None
    assert host.slot.min_delay == 2.5 and host.slot.delay == 2.5


async def test_a_grant_carries_its_last_owners_politeness() -> None:
    frontier = MemoryFrontier(urls_of("a.test", 2))
    async with loading(frontier, Limits(per_host_delay=0.5)) as at:
        at.loader.granted([HostPoliteness("a.test", wait=3.0, delay=1.5)], now=10.0)
    host = at.hosts.get("a.test")
    assert host is not None and host.slot is not None
    assert host.slot.next_start == 13.0 and host.slot.delay == 1.5


async def test_a_host_found_by_stored_pages_is_held_only_with_room() -> None:
    """A window of one host: a host found beyond it stays in the table, for a claim."""
    frontier = MemoryFrontier(urls_of("a.test", 2) + urls_of("b.test", 2))
    async with loading(frontier, Limits(max_hosts=1)) as at:
        at.loader.note_pending("a.test")
        at.loader.note_pending("b.test")
    assert at.hosts.get("a.test") is not None
    assert at.hosts.get("b.test") is None and at.window.more  # a claim will find it
    assert at.loader.pending_hosts == 1


async def test_a_draining_host_is_loaded_no_more() -> None:
    frontier = MemoryFrontier(urls_of("a.test", 4))
    async with loading(frontier, Limits()) as at:
        at.window.draining.add("a.test")
        at.loader.note_pending("a.test", force=True)
    assert at.hosts.get("a.test") is None and at.loader.pending_hosts == 0


async def test_claims_take_the_hosts_on() -> None:
    frontier = MemoryFrontier(urls_of("a.test", 1) + urls_of("b.test", 1) + urls_of("c.test", 1))
    async with loading(frontier, Limits()) as at:
        assert await at.loader.claim(2, lambda: 0.0) == 2
        assert len(at.hosts) == 2 and at.window.more  # it came back full: more may be there
        assert await at.loader.claim(2, lambda: 0.0) == 1
        assert len(at.hosts) == 3 and not at.window.more
