"""The scheduler: which request a fetch worker gets next, and when the crawl is over.

Per host it keeps a small queue leased from the frontier, the requests in flight, the earliest
moment the next request may start (per-host delay, Crawl-delay, backoff) and the host's robots.txt
rules. One dispatcher task hands a request to a worker only when that worker is idle and the
request's host is ready now, so a slow, throttled or backing-off host never holds up the others.

The crawl is over when nothing is leased-but-unstored, no host has pending URLs and the frontier
table confirms it: exact task accounting, never a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from scraper.models import CrawlRequest, FetchResult, PageRecord
from scraper.store.base import Frontier
from scraper.urls import host_key

log = logging.getLogger(__name__)

SWEEP_EVERY = 1000  # requests between two sweeps of idle hosts
ROBOTS_TRIES = 3  # rounds of fetching an unavailable robots.txt before its host is given up
KEEP_RELEASED = 20  # released hosts whose last settings the stats still show
Assignment = tuple[CrawlRequest, str | None]  # the request, and why it is skipped (None: fetch it)


class HostRules(Protocol):
    """What robots.txt says about one host."""

    @property
    def delay(self) -> float | None: ...

    @property
    def unavailable(self) -> bool: ...

    def skip_reason(self, url: str) -> str | None: ...


class HostGate(Protocol):
    async def rules(self, host: str, scheme_url: str) -> HostRules: ...

    def forget(self, sample_url: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    per_host_concurrency: int = 8
    per_host_delay: float = 0.0
    queue_size: int = 1000
    max_pages: int = 0
    max_pages_per_host: int = 0
    autothrottle: bool = True
    robots_retry: float = 30.0  # seconds before asking an unavailable robots.txt again


class HostState:
    """One host's queue and politeness state; dropped when the host has nothing left to do."""

    __slots__ = (
        "backoff",
        "best_latency",
        "concurrency",
        "delay",
        "gating",
        "in_flight",
        "in_ring",
        "latency",
        "maybe_pending",
        "min_delay",
        "name",
        "next_start",
        "ok_streak",
        "queue",
        "refilling",
        "robots_tries",
        "rules",
    )

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.queue: deque[CrawlRequest] = deque()
        self.maybe_pending = True  # the frontier table may hold pending URLs of this host
        self.refilling = False
        self.gating = False
        self.in_ring = False
        self.rules: HostRules | None = None
        self.robots_tries = 1
        self.in_flight = 0
        self.next_start = 0.0
        self.concurrency = limits.per_host_concurrency
        self.delay = self.min_delay = limits.per_host_delay
        self.backoff = 0.0
        self.latency = 0.0
        self.best_latency = 0.0
        self.ok_streak = 0

    def idle(self, now: float) -> bool:
        """Nothing to do and nothing to remember: its delay has passed and it is not throttled."""
        busy = self.queue or self.in_flight or self.maybe_pending or self.refilling or self.gating
        throttled = self.backoff > 0.05 or self.delay > self.min_delay + 0.001
        return not busy and not throttled and self.next_start <= now

    def snapshot(self) -> dict[str, float | int]:
        return {
            "queued": len(self.queue),
            "in_flight": self.in_flight,
            "concurrency": self.concurrency,
            "delay_s": round(self.delay, 3),
            "latency_ms": round(self.latency * 1000, 1),
        }


class Scheduler:
    def __init__(
        self,
        store: Frontier,
        limits: Limits,
        *,
        gate: HostGate | None = None,
        on_starved: Callable[[bool], None] = lambda starved: None,
        handed: int = 0,
    ) -> None:
        self._store = store
        self._limits = limits
        self._gate = gate
        # Told when only uncommitted pages can bring new work, so the sink commits at once.
        self._on_starved = on_starved
        self._starved = False
        self._hosts: dict[str, HostState] = {}
        self._ring: deque[HostState] = deque()  # hosts with queued requests, in turn
        self._to_refill: set[str] = set()
        self._changed = asyncio.Event()
        self._idle_workers = asyncio.Semaphore(0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._released: dict[str, dict[str, float | int]] = {}
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

    def track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (reading a sitemap, say) as part of the crawl: it is not over until done."""
        self._spawn(work)

    def adopt(self) -> None:
        """A record that no request of ours led to is on its way to the sink (a sitemap's row)."""
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
                _throttle(host, result, self._limits, asyncio.get_running_loop().time())
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

    def hosts(self) -> dict[str, dict[str, float | int]]:
        """Each host's settings now; for hosts already released, as they were then."""
        current = {name: host.snapshot() for name, host in self._hosts.items()}
        return {**self._released, **current}

    # The dispatcher -------------------------------------------------------------------------

    async def run(self, handoff: asyncio.Queue[Assignment | None], workers: int) -> None:
        """Hand requests to idle workers until the crawl is over, then one None to each."""
        for host in await self._store.pending_hosts(limit=10_000):
            self._note_pending(host)
        try:
            while True:
                await self._idle_workers.acquire()
                assignment = await self._next_assignment()
                if assignment is None:
                    break
                handoff.put_nowait(assignment)
        finally:
            for task in self._tasks:
                task.cancel()
        for _ in range(workers):
            handoff.put_nowait(None)

    async def _next_assignment(self) -> Assignment | None:
        loop = asyncio.get_running_loop()
        while True:
            if self._failure is not None:
                raise self._failure
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
                pending = [] if self._limit_reached() else await self._store.pending_hosts(100)
                missed = [name for name in pending if name not in self._capped]
                if not missed:
                    return None
                for name in missed:
                    self._note_pending(name)
                continue
            self._set_starved(
                bool(self.in_flight)
                and not self._queued
                and not self._tasks
                and not any(h.maybe_pending for h in self._hosts.values())
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
            self._sweep()
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
        return request, skip

    def _skip_reason(self, host: HostState, request: CrawlRequest) -> str | None:
        return host.rules.skip_reason(request.url) if host.rules is not None else None

    def _limit_reached(self) -> bool:
        return bool(self._limits.max_pages) and self.handed >= self._limits.max_pages

    def _over(self) -> bool:
        if self.in_flight or self._tasks:
            return False
        if self._limit_reached():
            return True
        return not self._queued and not any(h.maybe_pending for h in self._hosts.values())

    # Hosts, refills and robots.txt ----------------------------------------------------------

    def _note_pending(self, name: str) -> None:
        if name in self._capped:
            return
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = HostState(name, self._limits)
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
            self._spawn(self._refill(host, min(self._host_buffer - len(host.queue), room)))

    async def _refill(self, host: HostState, want: int) -> None:
        try:
            leased = await self._store.lease(host.name, want)
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
        self._spawn(self._load_rules(host, self._gate))

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

    def _spawn(self, work: asyncio.Future[None] | object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._changed.set()
        if not task.cancelled() and task.exception() is not None:
            self._failure = task.exception()  # raised by the dispatcher: stop, don't lose track

    def _release_if_idle(self, host: HostState) -> None:
        now = asyncio.get_running_loop().time()
        if host.idle(now) and not host.in_ring and self._hosts.get(host.name) is host:
            del self._hosts[host.name]  # a host with nothing to do costs no memory
            self._released[host.name] = host.snapshot()  # but a few are kept for the stats
            if len(self._released) > KEEP_RELEASED:
                del self._released[next(iter(self._released))]

    def _sweep(self) -> None:
        """Release hosts that were kept for their cool-down or throttling and are idle now."""
        for host in list(self._hosts.values()):
            self._release_if_idle(host)


def _throttle(host: HostState, result: FetchResult, limits: Limits, now: float) -> None:
    """AIMD per host: see "Adaptive throttling" in the README."""
    if result.throttled:
        host.backoff = min(max(2 * host.backoff, 1.0), 60.0)
        host.next_start = max(host.next_start, now + max(host.backoff, result.retry_after or 0))
        host.concurrency = max(1, host.concurrency // 2)
        host.delay = max(host.delay, host.latency, host.min_delay)
        host.ok_streak = 0
        return
    if result.error_kind in ("timeout", "connection") or (result.status or 0) >= 500:
        host.concurrency = max(1, host.concurrency - 1)
        host.ok_streak = 0
        return
    latency = (result.elapsed_ms or 0.0) / 1000
    host.latency = latency if not host.latency else 0.8 * host.latency + 0.2 * latency
    host.best_latency = min(host.best_latency or latency, latency)
    host.backoff /= 2
    host.delay = max(host.min_delay, host.delay * 0.8 if host.delay > 0.01 else 0.0)
    if host.latency > max(4 * host.best_latency, 0.5):  # the server is queueing our requests
        host.concurrency = max(1, host.concurrency - 1)
        host.ok_streak = 0
        return
    host.ok_streak += 1
    if host.ok_streak >= host.concurrency and host.concurrency < limits.per_host_concurrency:
        host.concurrency += 1
        host.ok_streak = 0
