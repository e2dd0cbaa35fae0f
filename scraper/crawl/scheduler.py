"""The dispatcher: which request a fetch worker gets next, and when the crawl is over.

Politeness is kept per **slot** (`hosts.py`): a host, a registrable domain or an IP address, as
`fetch.politeness_key` says. A slot may start a request when fewer than its concurrency are in
flight and its delay (per-host delay, Crawl-delay, backoff, Retry-After) has passed since its last
start. Slots that have work sit in a heap keyed on the moment each may start next, so a hand-out
costs O(log slots) whatever the number of hosts: no scan over hosts per hand-out, per wake-up or
at the end check (`scraper.bench.dispatch` measures it). A slow, throttled or backing-off host
never holds up the others.

Every request to a host takes its turn on the slot, robots.txt and sitemaps included: they are
**jobs** (`turn()`), granted by the dispatcher like a page is handed out, counted in the slot's
requests in flight, and starting its delay. A request starts the delay when it goes on the wire
(`started()`), not when it is handed out, and nothing is handed out while the fetch stage has no
free connection slot, so the gap between two starts at one server is never under the delay.

Which hosts it may work on comes from a `HostLeases` (`leases.py`): with one process on a crawl,
every host (the frontier's pending hosts, taken as below); with several on one crawl
(PostgreSQL), the hosts leased to this one, each dispatched to only while its lease outlives a
request, and handed back with its slot's politeness state once it has nothing in flight or
unstored.

Hosts are held in memory only while they have work, at most `crawl.queue_size` of them: hosts
with pending URLs beyond that stay in the frontier table and are taken, a batch at a time, as
others finish. Refills from the frontier, robots.txt loads, IP look-ups and the crawl's other
work (reading sitemaps) run as tasks of the dispatcher's TaskGroup: one that fails fails the
crawl, and none outlives it. The crawl is over when nothing is leased-but-unstored, no such task
runs, no held host has pending URLs and the frontier confirms it: exact accounting, never a
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from scraper.crawl.hosts import (
    ALLOW_ALL,
    HostRules,
    HostSettings,
    HostState,
    HostTable,
    KeyOf,
    Limits,
    ResolveKey,
    Slot,
    throttle,
)
from scraper.crawl.leases import (
    CLAIM_EVERY,
    adopt,
    hosts_to_drain,
    keep_leases,
    politeness_of,
)
from scraper.models import CrawlRequest, ErrorKind, FetchResult, PageRecord
from scraper.store.base import Frontier, HostLeases, HostPoliteness
from scraper.urls import host_key

log = logging.getLogger(__name__)

ROBOTS_TRIES = 3  # rounds of fetching an unavailable robots.txt before its host is given up
# A connection to a host whose next request may start within this many seconds is kept open;
# others are closed at once (under aiohttp's 15 s keep-alive, after which it closes them anyway).
KEEP_HORIZON = 10.0


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
    skip_kind: ErrorKind = ErrorKind.ROBOTS


class HostGate(Protocol):
    """Where a host's robots.txt rules come from (`robots.py`'s RobotsGate, passed in)."""

    async def rules(self, host: str, sample_url: str) -> HostRules: ...

    def forget(self, sample_url: str) -> None: ...

    async def adopt(self, record: str) -> None: ...


class Wire(Protocol):
    """What the dispatcher needs to know of the fetch stage's connection slots (`Fetcher`)."""

    @property
    def in_flight(self) -> int:
        """Requests on the wire now."""
        ...

    @property
    def wire_limit(self) -> int:
        """How many may be (fetch.concurrency, lowered while the process is out of sockets)."""
        ...


class FetchStage(Protocol):
    """What PoliteFetch needs of the fetch stage (`crawl/fetch.py`'s Fetcher, passed in)."""

    async def fetch(
        self,
        request: CrawlRequest,
        *,
        any_type: bool,
        time_limit: float | None,
        body_limit: int | None,
    ) -> FetchResult: ...


class Scheduler:
    """The dispatcher of one crawl: `run()` is its task; the workers call the rest."""

    def __init__(
        self,
        frontier: Frontier,
        limits: Limits,
        *,
        gate: HostGate | None = None,
        wire: Wire | None = None,
        key_of: KeyOf | None = None,
        resolve_key: ResolveKey | None = None,
        keep_alive_budget: int = 0,
        on_starved: Callable[[bool], None] = lambda starved: None,
        handed: int = 0,
        leases: HostLeases | None = None,
        concurrency: int = 16,
    ) -> None:
        self._frontier = frontier
        # Shared leases (several processes on the crawl): the hosts this one may work on.
        self._leases = leases if leases is not None and leases.shared else None
        self._concurrency = concurrency  # fetch.concurrency: the slots the hosts kept must fill
        # Shared leases only: requests handed out and not yet stored, by URL (a host is handed
        # back only when none of its pages is still on its way to the sink).
        self._unstored: dict[str, str] = {}
        self._unstored_per_host: dict[str, int] = {}
        # Shared leases only: hosts being handed back, sent nothing more until released.
        self._draining: set[str] = set()
        self._limits = limits
        self._gate = gate
        self._wire = wire
        self._key_of = key_of
        self._resolve_key = resolve_key  # set: the key needs a look-up (an IP), in a task
        # Told when a worker idles while only pages not yet committed can bring it work, so the
        # sink commits at once instead of batching.
        self._on_starved = on_starved
        self._starved = False
        self._hosts = HostTable(limits)
        self._window = limits.host_window
        # Slots that have work, keyed on the moment each may start next (lazily: an entry may
        # be early, never late; `_pick` puts it back at the right time).
        self._ready: list[tuple[float, int, Slot]] = []
        self._order = itertools.count()
        self._free: deque[tuple[HostState, Assignment]] = deque()  # needing no fetch: at once
        self._refills: deque[HostState] = deque()
        self._pending_hosts = 0  # held hosts whose maybe_pending is set
        self._more_hosts = False  # the frontier may hold pending hosts that are not held
        self._cursor = ""  # where the next look for such hosts starts (host keys, in order)
        self._discovering = False
        self._changed = asyncio.Event()
        self._idle_workers = asyncio.Semaphore(0)
        self._tasks: asyncio.TaskGroup | None = None  # the dispatcher's, while it runs
        self._tasks_running = 0  # tasks of that group not yet done: the crawl is not over meanwhile
        self._taken_per_host: dict[str, int] = {}  # only with crawl.max_pages_per_host
        self._capped: set[str] = set()
        self._stopping = False
        self._queued = 0  # requests leased into memory, not yet handed out
        # Handed out (pages and jobs) and not yet on the wire, by URL: one that never gets there
        # (outside the boundary, say) is forgotten when it is done.
        self._unstarted: dict[str, int] = {}
        self._unstarted_total = 0
        self._kept = 0  # idle connections we let stay open (≤ keep_alive_budget)
        self._keep_budget = keep_alive_budget
        self.in_flight = 0  # handed out and not yet stored
        self.handed = handed
        self._clock: Callable[[], float] | None = None

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

    def started(self, request: CrawlRequest, first: bool) -> None:
        """The fetch stage put a request on the wire: its slot's delay counts from now (a
        request may wait for a connection slot, or retry, after it was handed out)."""
        if first:
            self._forget_unstarted(request.url)
        host = self._hosts.get(host_key(request.url))
        if host is not None and host.slot is not None:
            slot = host.slot
            slot.next_start = max(slot.next_start, self._now() + slot.delay)

    def ended(self) -> None:
        """A request left the wire (done, or waiting out a retry's backoff): room for another."""
        self._changed.set()

    def keep_alive(self, request: CrawlRequest) -> bool:
        """May the connection of `request`, about to go out, stay open after it? Only if its host
        has work queued that may start soon, and within the budget of kept connections: so open
        sockets stay under fetch.concurrency plus that budget, whatever the number of hosts."""
        host = self._hosts.get(host_key(request.url))
        if host is None or host.slot is None or not (host.queue or host.jobs):
            return False
        if self._kept >= self._keep_budget:
            return False
        if host.slot.next_start - self._now() > KEEP_HORIZON:
            return False
        host.idle_kept += 1
        self._kept += 1
        return True

    def not_before(self, request: CrawlRequest) -> float:
        """Seconds until the request's slot allows another start: a retry waits for it too, so
        the delay holds between an attempt and its retry."""
        host = self._hosts.get(host_key(request.url))
        if host is None or host.slot is None:
            return 0.0
        return max(0.0, host.slot.next_start - self._now())

    def fetched(self, request: CrawlRequest, result: FetchResult) -> None:
        """A fetch finished: free the slot and let its outcome tune it."""
        self._forget_unstarted(request.url)  # (if it never went on the wire)
        host = self._hosts.get(host_key(request.url))
        if host is not None:
            self._done_with(host, result)
        self._changed.set()

    def stored(self, records: list[PageRecord]) -> None:
        """The sink committed these pages (and the URLs they discovered)."""
        self.in_flight -= len(records)
        leases = self._leases
        for record in records:
            for child_host in {host_key(child.url) for child in record.children}:
                if leases is None or leases.valid(child_host, 0.0):  # held at all
                    self._note_pending(child_host)  # another's host: its owner finds them
        for record in records:
            name = self._unstored.pop(record.fetch.request.url, None)
            if name is None:
                continue
            left = self._unstored_per_host.get(name, 1) - 1
            if left > 0:
                self._unstored_per_host[name] = left
            else:
                self._unstored_per_host.pop(name, None)
            if leases is not None:
                host = self._hosts.get(name)
                if host is not None:
                    self._release_if_idle(host)
        self._changed.set()

    # The host leases' side (shared leases only) ------------------------------------------------

    def granted(self, grants: list[HostPoliteness]) -> None:
        """These hosts are ours now: crawl on from the state their last owner left."""
        now = self._now()
        for grant in grants:
            self._note_pending(grant.host, force=True)
            host = self._hosts.get(grant.host)
            if host is not None and host.slot is not None and self._leases is not None:
                adopt(host.slot, grant, now)
                if grant.robots and self._gate is not None and host.rules is None:
                    host.gating = True  # its rules come from the record, not a fetch
                    self._start(self._adopt_rules(host, self._gate, grant.robots), "robots")
        self._changed.set()

    def lost(self, names: list[str]) -> None:
        """Our leases on these hosts ended (taken over): send nothing more there. Their queued
        URLs are the new owner's now (its claim gave them back to pending)."""
        for name in names:
            host = self._hosts.get(name)
            if host is not None:
                self._drop(host)
        self._changed.set()

    def _drop(self, host: HostState) -> None:
        self._queued -= len(host.queue)
        host.queue.clear()
        self._set_maybe_pending(host, False)
        self._release_if_idle(host)

    @property
    def hosts_held(self) -> int:
        """Hosts held and not being handed back."""
        return len(self._hosts) - len(self._draining)

    def give_back(self, count: int) -> None:
        """Hand back up to `count` hosts (over the fair share: others joined the crawl, or ran
        out of hosts), as long as those left fill this process's fetch slots. Each is drained:
        its queued URLs go back to pending, nothing more is sent there, and its lease goes back
        once it has nothing in flight or unstored (waiting for a moment when a busy host has
        nothing in flight would wait forever: 4 workers on 40 hosts handed none back)."""
        held = [host for host in self._hosts.held() if host.name not in self._draining]
        for host in hosts_to_drain(self._concurrency, held, count, self._in_hand):
            self._draining.add(host.name)
            self._drop(host)
        self._changed.set()

    def _in_hand(self, host: HostState) -> int:
        return host.in_flight + self._unstored_per_host.get(host.name, 0)

    def hosts_wanted(self) -> int:
        """How many more hosts this process would hold (none once stopping): as many as its
        host window allows, which the fair share caps. Its slots spread over all of them, so
        the crawl's hosts progress together and finish together, as on one process; claiming
        only for the slots (one and a half times fetch.concurrency's) drained a few hosts at
        a time at their per-host limit, and left hosts unclaimed while a worker idled (4
        workers on 40 hosts: one held 8, two hosts waited until 23 s, then took 10 s more at
        4 requests each)."""
        if self._stopping or self._limit_reached():
            return 0
        return max(0, self._window - len(self._hosts))

    def politeness(self) -> list[HostPoliteness]:
        """The politeness state of every host held, as a release would leave it (for the host
        leases' close: a stopped process hands its hosts on with their next start)."""
        now = self._now()
        return [
            politeness_of(host.name, host.slot, now)
            for host in self._hosts.held()
            if host.slot is not None
        ]

    def remember_robots(self, site: str, record: str) -> None:
        """robots.txt of `site` was fetched here: with shared leases, the host's next owners
        take it from its row instead of asking again."""
        if self._leases is not None and self._tasks is not None:
            host = host_key(site + "/")
            self._start(self._leases.remember_robots(host, record), f"robots {host}")

    async def _adopt_rules(self, host: HostState, gate: HostGate, record: str) -> None:
        try:
            await gate.adopt(record)
        finally:
            host.gating = False
        if host.queue:  # its rules are in the gate's cache now: no request to read them
            self._start_gate(host, host.queue[0].url)

    @contextlib.asynccontextmanager
    async def turn(self, url: str) -> AsyncIterator[None]:
        """Wait for a turn on the slot of `url`'s host, as a request handed out would, and hold
        it for the block (robots.txt, a sitemap): the request counts in the slot's concurrency,
        and starts its delay."""
        host = self._hold(host_key(url))
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        host.jobs.append((url, granted))
        self._became_ready(host)
        self._changed.set()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._forget_unstarted(url)  # granted just as it was cancelled: never started
                self._done_with(host, None)
            else:
                with contextlib.suppress(ValueError):
                    host.jobs.remove((url, granted))
                self._release_if_idle(host)
            raise
        try:
            yield
        finally:
            self._forget_unstarted(url)  # (if its fetch never went on the wire)
            self._done_with(host, None)
            self._changed.set()

    def observe(self, url: str, result: FetchResult) -> None:
        """A job's outcome (robots.txt answering 429, say) tunes the slot as a page's would."""
        host = self._hosts.get(host_key(url))
        if host is not None and host.slot is not None and self._limits.autothrottle:
            throttle(host.slot, result, self._limits, self._now())

    # State for progress displays -------------------------------------------------------------

    def queued(self) -> int:
        return self._queued

    def hosts(self) -> dict[str, HostSettings]:
        """Each slot's settings now; for slots already released, as they were then."""
        return self._hosts.snapshot()

    def held_hosts(self) -> int:
        """Hosts whose state is in memory now (a host with nothing left to do is released)."""
        return len(self._hosts)

    def held_slots(self) -> int:
        return self._hosts.slots()

    # The dispatcher -------------------------------------------------------------------------

    async def run(self, handoff: asyncio.Queue[Assignment | None], workers: int) -> None:
        """Hand requests to idle workers until the crawl is over (or stopped), then one None to
        each. A task of the crawl that fails ends this with its error (in an ExceptionGroup)."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                if self._leases is None:
                    self._more_hosts = True  # the seeds: taken from the frontier like any host
                else:  # hosts come from claims: now, and in a task that is not the crawl's
                    self.granted(await self._leases.claim(max(1, self.hosts_wanted())))
                    tasks.create_task(keep_leases(self._leases, self), name="host leases")
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
        while True:
            if self._stopping:
                return None
            self._changed.clear()
            now = self._now()
            self._hosts.cool(now)
            self._start_refills()
            self._start_discovery()
            if self._free and not self._limit_reached():
                self._set_starved(False)
                return self._take_free()
            wake_at: float | None = None
            if self._wire_room() and not self._limit_reached():
                slot, host, wake_at = self._pick(now)
                if host is not None and self._leases and not self._leases.valid(host.name, now):
                    self.lost([host.name])  # the lease would not outlive a request
                    continue
                if slot is not None and host is not None:
                    if host.jobs:
                        self._grant(slot, host, now)
                        continue
                    self._set_starved(False)
                    return self._take(slot, host, now)
            if self._over() and self._leases is not None:
                grants = (
                    []
                    if self._limit_reached()
                    else await self._leases.claim(max(1, self.hosts_wanted()))
                )
                if grants:
                    self.granted(grants)
                    continue
                if self._limit_reached() or await self._leases.over():
                    return None
                # Others hold hosts that may still bring work: ask again in a while.
                wake_at = now + CLAIM_EVERY
            elif self._over():
                # The table is the truth: make sure no pending URL escaped the bookkeeping.
                pending = [] if self._limit_reached() else await self._frontier.pending_hosts(100)
                missed = [name for name in pending if name not in self._capped]
                if not missed:
                    return None
                for name in missed:
                    self._note_pending(name, force=True)
                continue
            # A worker is idle and nothing may start now: if pages not yet committed may hold
            # links it could fetch, have the sink commit them at once.
            self._set_starved(self._wire_room() and self._a_host_waits_for_commits())
            cooling = self._hosts.next_cooling()
            if cooling is not None:
                wake_at = cooling if wake_at is None else min(wake_at, cooling)
            try:
                async with asyncio.timeout_at(wake_at):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _wire_room(self) -> bool:
        """Is there a free connection slot for one more request? Handing out more would make a
        request wait for one, and start later than the moment its slot's delay was set for."""
        wire = self._wire
        return wire is None or wire.in_flight + self._unstarted_total < wire.wire_limit

    def _pick(self, now: float) -> tuple[Slot | None, HostState | None, float | None]:
        """The slot that may start now and its next host in turn; or None and the moment the
        earliest slot will be ready."""
        ready = self._ready
        while ready:
            at, _, slot = ready[0]
            if slot.heap_at != at:  # a stale entry: the slot was put back at another time
                heapq.heappop(ready)
                continue
            if slot.in_flight >= slot.concurrency or not slot.ring:
                heapq.heappop(ready)
                slot.heap_at = None  # back in when a request ends or work comes
                continue
            if slot.next_start > at:  # its delay moved on (a start, a throttle): later
                slot.heap_at = slot.next_start
                heapq.heapreplace(ready, (slot.next_start, next(self._order), slot))
                continue
            if at > now:
                return None, None, at
            ring = slot.ring
            while ring and not ring[0].has_work():
                ring.popleft().in_ring = False
            if not ring:
                heapq.heappop(ready)
                slot.heap_at = None
                continue
            return slot, ring[0], None
        return None, None, None

    def _rotate(self, slot: Slot, host: HostState) -> None:
        """After a hand-out from `host` (at the front of its slot's ring): its turn goes to the
        next host; it keeps a place at the back if it has more."""
        ring = slot.ring
        ring.popleft()
        if host.has_work():
            ring.append(host)
        else:
            host.in_ring = False
        heapq.heappop(self._ready)
        slot.heap_at = None

    def _grant(self, slot: Slot, host: HostState, now: float) -> None:
        url, granted = host.jobs.popleft()
        self._rotate(slot, host)
        if granted.done():  # its waiter was cancelled
            self._sync(slot)
            return
        self._start_request(slot, host, now, url)
        granted.set_result(None)
        self._sync(slot)

    def _start_request(self, slot: Slot, host: HostState, now: float, url: str) -> None:
        host.in_flight += 1
        slot.in_flight += 1
        slot.next_start = max(slot.next_start, now + slot.delay)
        if self._wire is not None:  # (the fetch stage tells when it starts: `started`)
            self._unstarted[url] = self._unstarted.get(url, 0) + 1
            self._unstarted_total += 1
        if host.idle_kept:  # it will reuse the connection kept open for it
            host.idle_kept -= 1
            self._kept -= 1

    def _take(self, slot: Slot, host: HostState, now: float) -> Assignment:
        request = host.queue.popleft()
        self._queued -= 1
        self._rotate(slot, host)
        self.in_flight += 1
        self.handed += 1
        self._start_request(slot, host, now, request.url)
        self._unstored[request.url] = host.name
        self._unstored_per_host[host.name] = self._unstored_per_host.get(host.name, 0) + 1
        self._count_for_host(host)
        self._sync(slot)
        self._want_refill(host)
        return Assignment(request)

    def _take_free(self) -> Assignment:
        host, assignment = self._free.popleft()
        self._queued -= 1
        self.in_flight += 1
        self.handed += 1
        self._unstored[assignment.request.url] = host.name
        self._unstored_per_host[host.name] = self._unstored_per_host.get(host.name, 0) + 1
        self._count_for_host(host)
        self._want_refill(host)
        self._release_if_idle(host)
        return assignment

    def _count_for_host(self, host: HostState) -> None:
        per_host = self._limits.max_pages_per_host
        if not per_host or self._leases is not None:
            return  # (shared leases: the backend counts, for the whole crawl, as it leases)
        taken = self._taken_per_host[host.name] = self._taken_per_host.get(host.name, 0) + 1
        if taken >= per_host:
            self._capped.add(host.name)  # the rest stay in the table; not for this crawl
            self._queued -= len(host.queue)
            host.queue.clear()
            kept = len(self._free)
            self._free = deque(item for item in self._free if item[0] is not host)
            self._queued -= kept - len(self._free)  # (a cap is rare: one pass is fine)
            self._set_maybe_pending(host, False)

    def _limit_reached(self) -> bool:
        if self._leases is not None:
            return False  # the backend leases no URL past the crawl's limit (FleetRules)
        return bool(self._limits.max_pages) and self.handed >= self._limits.max_pages

    def _over(self) -> bool:
        if self.in_flight:
            return False
        if self._limit_reached():
            return True  # the tasks still running (robots.txt, sitemaps) are cancelled
        if self._tasks_running or self._queued or self._unstarted_total:
            return False
        return not self._pending_hosts and not self._more_hosts

    def _forget_unstarted(self, url: str) -> None:
        count = self._unstarted.get(url)
        if count:
            self._unstarted_total -= 1
            if count == 1:
                del self._unstarted[url]
            else:
                self._unstarted[url] = count - 1

    def _a_host_waits_for_commits(self) -> bool:
        """Has a host pages not yet stored, no queued request and room in its slot? Its pages'
        links may be its next requests, so the sink should commit now. A host with a queue
        needs no commit to go on: with this test a crawl of one busy host commits in batches
        (in the cpu benchmark every commit was eager before, 8 pages each against 200). Looks
        only at hosts with unstored pages (bounded by the pages in flight), not at every host."""
        for name in self._unstored_per_host:
            host = self._hosts.get(name)
            if host is None:
                return True  # released meanwhile: its links would bring it back
            slot = host.slot
            if host.queue or host.maybe_pending or host.refilling:
                continue  # it has work, or the frontier has some for it
            if slot is None or slot.in_flight < slot.concurrency:
                return True
        return False

    def _set_starved(self, starved: bool) -> None:
        if starved != self._starved:
            self._starved = starved
            self._on_starved(starved)

    # Slots in the ready heap ------------------------------------------------------------------

    def _became_ready(self, host: HostState) -> None:
        """The host may have work now: give it a place in its slot's ring, and the slot one in
        the heap."""
        slot = host.slot
        if slot is None or not host.has_work():
            return
        if not host.in_ring:
            host.in_ring = True
            slot.ring.append(host)
        self._sync(slot)

    def _sync(self, slot: Slot) -> None:
        if slot.heap_at is None and slot.ring and slot.in_flight < slot.concurrency:
            slot.heap_at = slot.next_start
            heapq.heappush(self._ready, (slot.next_start, next(self._order), slot))

    def _done_with(self, host: HostState, result: FetchResult | None) -> None:
        host.in_flight -= 1
        slot = host.slot
        if slot is not None:
            slot.in_flight -= 1
            if result is not None and self._limits.autothrottle:
                throttle(slot, result, self._limits, self._now())
            self._sync(slot)
        self._release_if_idle(host)

    # Hosts, refills and robots.txt ----------------------------------------------------------

    def _hold(self, name: str) -> HostState:
        host, new = self._hosts.hold(name)
        if not new:
            return host
        if self._gate is None:
            host.rules = ALLOW_ALL
        if self._resolve_key is not None:
            self._start(self._find_key(host, self._resolve_key), f"key {name}")
        else:
            self._hosts.join(host, self._key_of(name) if self._key_of else name)
        return host

    async def _find_key(self, host: HostState, resolve: ResolveKey) -> None:
        # (The host is not released meanwhile: HostState.busy() while it has no slot.)
        key = await resolve(host.name)
        self._hosts.join(host, key)
        self._became_ready(host)
        self._release_if_idle(host)

    def _note_pending(self, name: str, *, force: bool = False) -> None:
        if name in self._capped or name in self._draining:
            return
        host = self._hosts.get(name)
        if host is None:
            if len(self._hosts) >= self._window and not force:
                self._more_hosts = True  # it waits in the table for room
                return
            host = self._hold(name)
        self._set_maybe_pending(host, True)
        self._want_refill(host)

    def _set_maybe_pending(self, host: HostState, value: bool) -> None:
        if host.maybe_pending != value:
            host.maybe_pending = value
            self._pending_hosts += 1 if value else -1

    def _want_refill(self, host: HostState) -> None:
        buffer = max(4, 2 * self._limits.per_host_concurrency)
        if host.maybe_pending and not host.refill_queued and len(host.queue) < buffer // 2:
            host.refill_queued = True
            self._refills.append(host)

    def _start_refills(self) -> None:
        buffer = max(4, 2 * self._limits.per_host_concurrency)
        while self._refills:
            host = self._refills[0]
            if self._hosts.get(host.name) is not host or not host.maybe_pending or host.refilling:
                self._refills.popleft()
                host.refill_queued = False
                continue
            room = self._limits.queue_size - self._queued
            if room <= 0:
                return  # memory is full; refills resume as requests are taken
            self._refills.popleft()
            host.refill_queued = False
            host.refilling = True
            want = min(buffer - len(host.queue), room)
            self._start(self._refill(host, want), f"refill {host.name}")

    async def _refill(self, host: HostState, want: int) -> None:
        try:
            leased = await self._frontier.lease(host.name, want)
        finally:
            host.refilling = False
        if len(leased) < want or host.name in self._draining:
            self._set_maybe_pending(host, False)  # (a drained host's go back with its lease)
        if host.name not in self._capped and host.name not in self._draining:
            for request in leased:
                self._admit(host, request)
            if host.rules is None and not host.gating and host.queue:
                self._start_gate(host, host.queue[0].url)
            self._became_ready(host)
        self._release_if_idle(host)

    def _admit(self, host: HostState, request: CrawlRequest) -> None:
        """A leased request: to the host's queue, or, if it needs no fetch (fresh, or robots.txt
        rules it out), to the free queue, handed out at once."""
        self._queued += 1
        if request.fresh:
            self._free.append((host, Assignment(request)))
            return
        rules = host.rules
        skip = rules.skip_reason(request.url) if rules is not None else None
        if skip is not None:
            assert rules is not None
            self._free.append((host, Assignment(request, skip, rules.skip_kind)))
        else:
            host.queue.append(request)

    def _start_discovery(self) -> None:
        room = self._window - len(self._hosts)
        if not self._more_hosts or self._discovering or self._limit_reached():
            return
        if room < max(1, self._window // 10):
            return
        self._discovering = True
        self._start(self._discover(room), "hosts")

    async def _discover(self, room: int) -> None:
        """Take hosts with pending URLs from the frontier, in host order from the cursor."""
        try:
            names = await self._frontier.pending_hosts(room, after=self._cursor)
        finally:
            self._discovering = False
        fresh = [name for name in names if self._hosts.get(name) is None]
        if len(names) < room:
            # The end of the table: start again from its beginning; a pass that finds nothing
            # new means every pending host is held.
            if not fresh and not self._cursor:
                self._more_hosts = False
            self._cursor = ""
        else:
            self._cursor = names[-1]
        for name in fresh:
            self._note_pending(name, force=True)

    def _start_gate(self, host: HostState, sample_url: str) -> None:
        if self._gate is None:
            return
        host.gating = True
        self._start(self._load_rules(host, self._gate, sample_url), f"robots {host.name}")

    async def _load_rules(self, host: HostState, gate: HostGate, sample_url: str) -> None:
        try:
            for round_ in range(1, ROBOTS_TRIES + 1):
                rules = await gate.rules(host.name, sample_url)
                if not rules.unavailable or round_ == ROBOTS_TRIES:
                    break
                # RFC 9309: disallow everything for now, and ask again later.
                log.warning(
                    "%s: %s; asking again in %.0f s (round %d of %d)",
                    host.name,
                    rules.skip_reason(""),
                    self._limits.robots_retry,
                    round_,
                    ROBOTS_TRIES,
                )
                gate.forget(sample_url)
                await asyncio.sleep(self._limits.robots_retry)
        finally:
            host.gating = False
        host.rules = rules
        if rules.delay and host.slot is not None:
            slot = host.slot
            slot.min_delay = max(slot.min_delay, rules.delay)  # robots.txt Crawl-delay
            slot.delay = max(slot.delay, slot.min_delay)
        queued, host.queue = host.queue, deque()
        self._queued -= len(queued)
        for request in queued:
            self._admit(host, request)
        self._became_ready(host)
        self._release_if_idle(host)

    def _start(self, work: Coroutine[Any, Any, None], name: str) -> None:
        assert self._tasks is not None, "tasks start from the dispatcher's own run()"
        task = self._tasks.create_task(work, name=name)
        self._tasks_running += 1
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks_running -= 1
        self._changed.set()  # the dispatcher may be waiting for it: leases, rules, the end

    def _release_if_idle(self, host: HostState) -> None:
        if self._leases is not None and self._unstored_per_host.get(host.name):
            return  # its pages are on their way to the sink: its lease stays ours till then
        state = None
        if self._leases is not None and not host.busy() and host.slot is not None:
            state = politeness_of(host.name, host.slot, self._now())
        if not host.busy() and self._hosts.release_if_idle(host, self._now()):
            self._draining.discard(host.name)
            if self._leases is not None and self._tasks is not None and state is not None:
                self._unstored_per_host.pop(host.name, None)
                self._start(self._leases.release(state), f"release {host.name}")
            self._kept -= host.idle_kept  # closed by aiohttp's keep-alive timeout, at worst
            host.idle_kept = 0
            if self._more_hosts:
                self._changed.set()  # room for a host from the table

    def _now(self) -> float:
        if self._clock is None:  # the loop's clock, which timeouts use; looked up once
            self._clock = asyncio.get_running_loop().time
        return self._clock()


class PoliteFetch:
    """The fetch stage as robots.txt and sitemaps see it: each request waits for its turn on
    its host's slot (the scheduler's `turn`), counts in its concurrency and starts its delay,
    as a page would."""

    def __init__(self, fetcher: FetchStage) -> None:
        self._fetcher = fetcher
        self.scheduler: Scheduler | None = None

    async def fetch(
        self,
        request: CrawlRequest,
        *,
        any_type: bool,
        time_limit: float | None = None,
        body_limit: int | None = None,
    ) -> FetchResult:
        assert self.scheduler is not None, "PoliteFetch used before the scheduler was made"
        async with self.scheduler.turn(request.url):
            result = await self._fetcher.fetch(
                request, any_type=any_type, time_limit=time_limit, body_limit=body_limit
            )
            self.scheduler.observe(request.url, result)
            return result
