"""The dispatcher: which request a fetch worker gets next, and when the crawl is over.

It keeps, per host (`hosts.py`), a small queue leased from the frontier, the requests in flight,
the earliest moment the next request may start (per-host delay, Crawl-delay, backoff) and the
host's robots.txt rules. One dispatcher task hands a request to a worker only when that worker is
idle and the request's host is ready now, so a slow, throttled or backing-off host never holds up
the others.

Refills from the frontier, robots.txt loads and the crawl's other work (reading sitemaps) run as
tasks of the dispatcher's TaskGroup: one that fails fails the crawl, and none outlives it. The
crawl is over when nothing is leased-but-unstored, no such task runs, no host has pending URLs and
the frontier confirms it: exact accounting, never a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from scraper.crawl.hosts import HostRules, HostSettings, HostState, HostTable, Limits, throttle
from scraper.models import CrawlRequest, FetchResult, PageRecord
from scraper.store.base import Frontier
from scraper.urls import host_key

log = logging.getLogger(__name__)

SWEEP_EVERY = 1000  # requests between two sweeps of idle hosts
ROBOTS_TRIES = 3  # rounds of fetching an unavailable robots.txt before its host is given up


class _DispatchEnded(Exception):
    """Raised in the dispatcher's TaskGroup when the crawl is over or stopped, so the group
    cancels the tasks still running (after stop(), say) instead of waiting for them: the way the
    asyncio docs give to terminate a TaskGroup."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """A request handed to a fetch worker. With a `skip_reason` (robots.txt disallows it, or
    cannot be read, or the host is refused) it is recorded with that reason, and the error kind
    `skip_kind`, instead of fetched."""

    request: CrawlRequest
    skip_reason: str | None = None
    skip_kind: str = "robots"


class HostGate(Protocol):
    """Where a host's robots.txt rules come from (`robots.py`'s RobotsGate, passed in)."""

    async def rules(self, host: str, sample_url: str) -> HostRules: ...

    def forget(self, sample_url: str) -> None: ...


class Scheduler:
    """The dispatcher of one crawl: `run()` is its task; the workers call the rest."""

    def __init__(
        self,
        frontier: Frontier,
        limits: Limits,
        *,
        gate: HostGate | None = None,
        on_starved: Callable[[bool], None] = lambda starved: None,
        handed: int = 0,
    ) -> None:
        self._frontier = frontier
        self._limits = limits
        self._gate = gate
        # Told when only uncommitted pages can bring new work, so the sink commits at once.
        self._on_starved = on_starved
        self._starved = False
        self._hosts = HostTable(limits)
        self._ring: deque[HostState] = deque()  # hosts with queued requests, in turn
        self._to_refill: set[str] = set()
        self._changed = asyncio.Event()
        self._idle_workers = asyncio.Semaphore(0)
        self._tasks: asyncio.TaskGroup | None = None  # the dispatcher's, while it runs
        self._tasks_running = 0  # tasks of that group not yet done: the crawl is not over meanwhile
        self._taken_per_host: dict[str, int] = {}  # only with crawl.max_pages_per_host
        self._capped: set[str] = set()
        self._stopping = False
        self._queued = 0
        self.in_flight = 0  # handed out and not yet stored
        self.handed = handed
        self._host_buffer = max(4, 2 * limits.per_host_concurrency)

    # The workers' side --------------------------------------------------------------------

    def want_work(self) -> None:
        self._idle_workers.release()

    def start_crawl_task(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` (reading a site's sitemaps, say) as a task of the crawl: the crawl is not
        over until it ends, its failure fails the crawl, and a stopped crawl cancels it."""
        if self._tasks is None:
            work.close()
            raise RuntimeError("start_crawl_task: the dispatcher is not running")
        self._start(work, name)

    def expect_unrequested_record(self) -> None:
        """A record that no request of ours led to (a sitemap's row) is on its way to the sink:
        the crawl is not over until it is stored."""
        self.in_flight += 1

    def stop(self) -> None:
        """Hand out nothing more: workers get None once they finish what they hold."""
        self._stopping = True
        self._changed.set()

    def fetched(self, request: CrawlRequest, result: FetchResult) -> None:
        """A fetch finished: free the host's slot and let its outcome tune the host."""
        host = self._hosts.get(host_key(request.url))
        if host is not None:
            host.in_flight -= 1
            if self._limits.autothrottle:
                throttle(host, result, self._limits, asyncio.get_running_loop().time())
            self._release_if_idle(host)
        self._changed.set()

    def stored(self, records: list[PageRecord]) -> None:
        """The sink committed these pages (and the URLs they discovered)."""
        self.in_flight -= len(records)
        for record in records:
            for child_host in {host_key(child.url) for child in record.children}:
                self._note_pending(child_host)
        self._changed.set()

    # State for progress displays -------------------------------------------------------------

    def queued(self) -> int:
        return self._queued

    def hosts(self) -> dict[str, HostSettings]:
        """Each host's settings now; for hosts already released, as they were then."""
        return self._hosts.snapshot()

    def held_hosts(self) -> int:
        """Hosts whose state is in memory now (a host with nothing left to do is released)."""
        return len(self._hosts)

    # The dispatcher -------------------------------------------------------------------------

    async def run(self, handoff: asyncio.Queue[Assignment | None], workers: int) -> None:
        """Hand requests to idle workers until the crawl is over (or stopped), then one None to
        each. A task of the crawl that fails ends this with its error (in an ExceptionGroup)."""
        for host in await self._frontier.pending_hosts(limit=10_000):
            self._note_pending(host)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                await self._dispatch(handoff)
                raise _DispatchEnded
        except* _DispatchEnded:
            pass
        finally:
            self._tasks = None
        for _ in range(workers):
            handoff.put_nowait(None)

    async def _dispatch(self, handoff: asyncio.Queue[Assignment | None]) -> None:
        while True:
            await self._idle_workers.acquire()
            assignment = await self._next_assignment()
            if assignment is None:
                return
            handoff.put_nowait(assignment)

    async def _next_assignment(self) -> Assignment | None:
        loop = asyncio.get_running_loop()
        while True:
            if self._stopping:
                return None
            self._changed.clear()
            self._start_refills()
            now = loop.time()
            host, wake_at = self._pick(now)
            if host is not None:
                return self._take(host, now)
            if self._over():
                # The table is the truth: make sure no pending URL escaped the bookkeeping.
                pending = [] if self._limit_reached() else await self._frontier.pending_hosts(100)
                missed = [name for name in pending if name not in self._capped]
                if not missed:
                    return None
                for name in missed:
                    self._note_pending(name)
                continue
            self._set_starved(
                bool(self.in_flight)
                and not self._queued
                and not self._tasks_running
                and not self._hosts.any_pending()
            )
            try:
                async with asyncio.timeout_at(wake_at):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _pick(self, now: float) -> tuple[HostState | None, float | None]:
        """The next ready host in turn, or None and the moment the earliest one will be."""
        wake_at: float | None = None
        if self._limit_reached():
            return None, None
        for _ in range(len(self._ring)):
            host = self._ring.popleft()
            if not host.queue:
                host.in_ring = False
                self._release_if_idle(host)
                continue
            self._ring.append(host)
            if host.rules is None and self._gate is not None:
                if host.next_start > now:  # robots.txt was unavailable: try it again later
                    wake_at = host.next_start if wake_at is None else min(wake_at, host.next_start)
                else:
                    self._start_gate(host)
                continue
            head = host.queue[0]
            if head.fresh or self._skip_reason(host, head) is not None:
                return host, None  # handed out without a request, so no slot or delay applies
            if host.in_flight >= host.concurrency:
                continue
            if host.next_start > now:
                wake_at = host.next_start if wake_at is None else min(wake_at, host.next_start)
                continue
            return host, None
        return None, wake_at

    def _set_starved(self, starved: bool) -> None:
        if starved != self._starved:
            self._starved = starved
            self._on_starved(starved)

    def _take(self, host: HostState, now: float) -> Assignment:
        self._set_starved(False)
        request = host.queue.popleft()
        self._queued -= 1
        self.in_flight += 1
        self.handed += 1
        if self.handed % SWEEP_EVERY == 0:
            self._hosts.sweep(now)
        per_host = self._limits.max_pages_per_host
        if per_host:
            taken = self._taken_per_host[host.name] = self._taken_per_host.get(host.name, 0) + 1
            if taken >= per_host:
                self._capped.add(host.name)  # the rest stay in the table; not for this crawl
                self._queued -= len(host.queue)
                host.queue.clear()
                host.maybe_pending = False
        skip = self._skip_reason(host, request)
        if skip is None and not request.fresh:
            host.in_flight += 1
            host.next_start = now + host.delay
        if host.maybe_pending and len(host.queue) < self._host_buffer // 2:
            self._to_refill.add(host.name)
        if skip is not None and host.rules is not None:
            return Assignment(request, skip, host.rules.skip_kind)
        return Assignment(request, skip)

    def _skip_reason(self, host: HostState, request: CrawlRequest) -> str | None:
        return host.rules.skip_reason(request.url) if host.rules is not None else None

    def _limit_reached(self) -> bool:
        return bool(self._limits.max_pages) and self.handed >= self._limits.max_pages

    def _over(self) -> bool:
        if self.in_flight or self._tasks_running:
            return False
        if self._limit_reached():
            return True
        return not self._queued and not self._hosts.any_pending()

    # Hosts, refills and robots.txt ----------------------------------------------------------

    def _note_pending(self, name: str) -> None:
        if name in self._capped:
            return
        host = self._hosts.hold(name)
        host.maybe_pending = True
        if len(host.queue) < self._host_buffer // 2:
            self._to_refill.add(name)

    def _start_refills(self) -> None:
        for name in list(self._to_refill):
            host = self._hosts.get(name)
            room = self._limits.queue_size - self._queued
            if host is None or not host.maybe_pending or host.refilling:
                self._to_refill.discard(name)
                continue
            if room <= 0:
                return  # memory is full; refills resume as requests are taken
            self._to_refill.discard(name)
            host.refilling = True
            want = min(self._host_buffer - len(host.queue), room)
            self._start(self._refill(host, want), f"refill {host.name}")

    async def _refill(self, host: HostState, want: int) -> None:
        try:
            leased = await self._frontier.lease(host.name, want)
        finally:
            host.refilling = False
        if len(leased) < want:
            host.maybe_pending = False
        if host.name in self._capped:
            return
        host.queue.extend(leased)
        self._queued += len(leased)
        if host.queue and not host.in_ring:
            host.in_ring = True
            self._ring.append(host)
        self._release_if_idle(host)

    def _start_gate(self, host: HostState) -> None:
        if host.gating or self._gate is None:
            return
        host.gating = True
        self._start(self._load_rules(host, self._gate), f"robots {host.name}")

    async def _load_rules(self, host: HostState, gate: HostGate) -> None:
        try:
            rules = await gate.rules(host.name, host.queue[0].url if host.queue else "")
        finally:
            host.gating = False
        if rules.unavailable and host.robots_tries < ROBOTS_TRIES:
            # RFC 9309: disallow everything for now, and ask again later.
            log.warning(
                "%s: %s; asking again in %.0f s (round %d of %d)",
                host.name,
                rules.skip_reason(""),
                self._limits.robots_retry,
                host.robots_tries,
                ROBOTS_TRIES,
            )
            host.robots_tries += 1
            host.next_start = asyncio.get_running_loop().time() + self._limits.robots_retry
            gate.forget(host.queue[0].url if host.queue else "")
            return
        host.rules = rules
        if rules.delay:
            host.min_delay = max(host.min_delay, rules.delay)  # robots.txt Crawl-delay
            host.delay = max(host.delay, host.min_delay)

    def _start(self, work: Coroutine[Any, Any, None], name: str) -> None:
        assert self._tasks is not None, "tasks start from the dispatcher's own run()"
        task = self._tasks.create_task(work, name=name)
        self._tasks_running += 1
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks_running -= 1
        self._changed.set()  # the dispatcher may be waiting for it: leases, rules, the end

    def _release_if_idle(self, host: HostState) -> None:
        self._hosts.release_if_idle(host, asyncio.get_running_loop().time())
