"""The dispatcher: which request a fetch worker gets next, and when the crawl is over.

Politeness is kept per **slot** (`hosts.py`): a host, a registrable domain or an IP address, as
`fetch.politeness_key` says. A slot may start a request when fewer than its concurrency are
active (handed out and not done) and its delay (per-host delay, Crawl-delay, backoff,
Retry-After) has passed since its last start. Slots that have work sit in a heap keyed on the
moment each may start next (`ready.py`), so a hand-out costs O(log slots) whatever the number of
hosts (`python -m bench.dispatch` measures it). A slow, throttled or backing-off host never holds
up the others.

Every request to a host takes its turn on the slot, robots.txt and sitemaps included: they are
**jobs** (`turn()`, through `polite`: `polite.py`), granted by the dispatcher like a page is
handed out, counted in the slot's active requests, and starting its delay. A request starts the
delay when it goes on the wire (the fetch stage tells `OnTheWire`, built before both and shared:
`on_the_wire.py`), not when it is handed out, and nothing is handed out while the fetch stage has
no free connection slot, so the gap between two starts at one server is never under the delay.
What is queued, handed out, unstarted and unstored is in its `Ledger` (`ledger.py`); which idle
connections stay open, in `keep_alive.py`; when the sink should commit at once, `commit_now.py`.

Which hosts it may work on comes from its `HostLeases` (`leases.py`), whatever the backend: one
process is a fleet of one. A host is claimed (or, found by this process, taken at once where the
backend can: SQLite), dispatched to only while its lease outlives a request, and handed back
with its slot's politeness state once it has nothing active or unstored. Page budgets
(crawl.max_pages, crawl.max_pages_per_host) are the frontier's: `Frontier.lease` counts them.

Hosts are held in memory only while they have work, at most `crawl.queue_size` of them: hosts
with pending URLs beyond that stay in the frontier table and are claimed, a batch at a time, as
others finish (`HostWindow`, `host_window.py`, which also drains hosts over the fair share).
Taking hosts on, refilling their queues from the frontier, admitting each leased request (to
its host's queue, or handed out at once when it needs no fetch) and loading robots.txt before a
host's requests go out is its `HostLoader`'s (`host_loader.py`). Refills, robots.txt loads, IP
look-ups and the crawl's other work (reading sitemaps) run as tasks of the dispatcher's
TaskGroup: one that fails fails the crawl, and none outlives it. The crawl is over when nothing
is leased-but-unstored, no such task runs, no held host has pending URLs, no host is left to
claim and the leases confirm it: exact accounting, never a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from scraper.crawl.commit_now import CommitNow
from scraper.crawl.host_loader import Assignment, HostLoader
from scraper.crawl.host_window import HostWindow
from scraper.crawl.hosts import HostSettings, HostState, KeyOf, Limits, ResolveKey, Slot, throttle
from scraper.crawl.leases import CLAIM_EVERY, keep_leases, politeness_of
from scraper.crawl.on_the_wire import OnTheWire
from scraper.crawl.polite import NO_FETCH, PoliteFetch
from scraper.crawl.ports import FetchStage, HostGate
from scraper.crawl.ready import ReadyHeap
from scraper.models import CrawlRequest, FetchResult, PageRecord
from scraper.store.base import Frontier, HostLeases, HostPoliteness
from scraper.urls import host_key

log = logging.getLogger(__name__)


class _DispatchEnded(Exception):
    """Raised in the dispatcher's TaskGroup when the crawl is over or stopped, so the group
    cancels the tasks still running (after stop(), say) instead of waiting for them: the way the
    asyncio docs give to terminate a TaskGroup."""


__all__ = ["Assignment", "Scheduler"]


class Scheduler:
    """The dispatcher of one crawl: `run()` is its task; the workers call the rest."""

    def __init__(
        self,
        frontier: Frontier,
        limits: Limits,
        *,
        fetch: FetchStage = NO_FETCH,
        gate: Callable[[FetchStage], HostGate] | None = None,
        wire: OnTheWire | None = None,
        key_of: KeyOf | None = None,
        resolve_key: ResolveKey | None = None,
        commit_now: CommitNow | None = None,
        leases: HostLeases,
        concurrency: int = 16,
    ) -> None:
        self._frontier = frontier
        self._leases = leases  # the hosts this process may work on
        self._limits = limits
        # robots.txt and sitemaps take their turn on their host's slot, as a page would: the
        # gate reads robots.txt through this.
        self.polite = PoliteFetch(fetch, self)
        robots_gate = gate(self.polite) if gate is not None else None
        # Shared with the fetch stage, which tells it of requests on and off the wire.
        if wire is None:
            wire = OnTheWire(limits)  # (no fetch stage's slots to respect: its own tests)
        elif wire.limits is not limits:
            raise ValueError("the dispatcher's limits and its wire's differ")
        self._wire = wire
        self._slots = wire.slots
        self._hosts = wire.hosts
        self._ledger = wire.ledger  # queued, handed out, unstarted, unstored
        self._keep_alive = wire.keep_alive_budget  # idle connections that may stay open
        self._changed = wire.changed  # set when there may be something new to hand out
        # Told when a worker idles while only pages not yet committed can bring it work, so the
        # sink commits at once instead of batching.
        self._commit_now = commit_now or CommitNow()
        # The hosts held, paged in through the leases; fetch.concurrency: the slots the hosts
        # kept must fill when some are handed back.
        self._window = HostWindow(
            self._hosts, leases, frontier, size=limits.host_window, concurrency=concurrency
        )
        self._ready = ReadyHeap()  # slots that have work, by the moment each may start next
        # Hosts taken on, their queues refilled from the frontier, their requests admitted.
        self._loader = HostLoader(
            frontier,
            limits,
            hosts=self._hosts,
            ready=self._ready,
            ledger=self._ledger,
            window=self._window,
            start=self._start,
            release_if_idle=self._release_if_idle,
            gate=robots_gate,
            key_of=key_of,
            resolve_key=resolve_key,
        )
        self._free = self._loader.free  # requests needing no fetch: handed out at once
        self._idle_workers = asyncio.Semaphore(0)
        self._tasks: asyncio.TaskGroup | None = None  # the dispatcher's, while it runs
        self._tasks_running = 0  # tasks of that group not yet done: the crawl is not over meanwhile
        self._stopping = False
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
        self._ledger.expect_record()

    @property
    def unstored(self) -> int:
        """Handed out (or a sitemap's record, expected) and not yet stored."""
        return self._ledger.unstored

    @property
    def handed(self) -> int:
        """Requests handed out since the start."""
        return self._ledger.handed

    def stop(self) -> None:
        """Hand out nothing more: workers get None once they finish what they hold."""
        self._stopping = True
        self._changed.set()

    def fetched(self, request: CrawlRequest, result: FetchResult) -> None:
        """A fetch finished: free the slot and let its outcome tune it."""
        self._ledger.started(request.identity)  # (if it never went on the wire)
        host = self._hosts.get(host_key(request.url))
        if host is not None:
            self._done_with(host, result)
        self._changed.set()

    def stored(self, records: list[PageRecord]) -> None:
        """The sink committed these pages (and the URLs they discovered)."""
        leases = self._leases
        for record in records:
            for child_host in {host_key(child.url) for child in record.children}:
                if leases.holds(child_host):  # (another's host: its owner finds them)
                    self._loader.note_pending(child_host)
        for name in self._ledger.stored([record.fetch.request.identity for record in records]):
            host = self._hosts.get(name)
            if host is not None:
                self._release_if_idle(host)
        self._changed.set()

    # The host leases' side ------------------------------------------------------------------

    def granted(self, grants: list[HostPoliteness]) -> None:
        """These hosts are ours now: crawl on from the state their last owner left."""
        self._loader.granted(grants, self._now())
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
        self._ledger.queued -= len(host.queue)
        host.queue.clear()
        self._loader.set_maybe_pending(host, False)
        self._release_if_idle(host)

    @property
    def hosts_held(self) -> int:
        """Hosts held and not being handed back."""
        return self._window.held

    def give_back(self, count: int) -> None:
        """Hand back up to `count` hosts (over the fair share: others joined the crawl, or ran
        out of hosts), as long as those left fill this process's fetch slots (`HostWindow.drain`).
        Each is drained: its queued URLs go back to pending, nothing more is sent there, and its
        lease goes back once it has nothing active or unstored."""
        for host in self._window.drain(count, self._in_hand):
            self._drop(host)
        self._changed.set()

    def _in_hand(self, host: HostState) -> int:
        return host.active + self._ledger.unstored_of(host.name)

    def hosts_wanted(self) -> int:
        """How many more hosts this process would hold: none once stopping, else as many as its
        host window has room for (`HostWindow.wanted`), which the fair share caps."""
        return 0 if self._stopping else self._window.wanted()

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
        """robots.txt of `site` was fetched here: the host's next owners (another process's)
        take it from its lease instead of asking again."""
        if self._tasks is not None:
            host = host_key(site + "/")
            self._start(self._leases.remember_robots(host, record), f"robots {host}")

    @contextlib.asynccontextmanager
    async def turn(self, url: str) -> AsyncIterator[None]:
        """Wait for a turn on the slot of `url`'s host, as a request handed out would, and hold
        it for the block (robots.txt, a sitemap): the request counts in the slot's concurrency,
        and starts its delay."""
        host = self._loader.hold(host_key(url))
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        host.jobs.append((url, granted))
        self._ready.add(host)
        self._changed.set()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._ledger.started(url)  # granted just as it was cancelled: never started
                self._done_with(host, None)
            else:
                with contextlib.suppress(ValueError):
                    host.jobs.remove((url, granted))
                self._release_if_idle(host)
            raise
        try:
            yield
        finally:
            self._ledger.started(url)  # (if its fetch never went on the wire)
            self._done_with(host, None)
            self._changed.set()

    def observe(self, url: str, result: FetchResult) -> None:
        """A job's outcome (robots.txt answering 429, say) tunes the slot as a page's would."""
        host = self._hosts.get(host_key(url))
        if host is not None and host.slot is not None and self._limits.autothrottle:
            throttle(host.slot, result, self._limits, self._now())

    # State for progress displays -------------------------------------------------------------

    def queued(self) -> int:
        return self._ledger.queued

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
                # Hosts come from claims: now, and in a task that is not the crawl's.
                await self._loader.claim(max(1, self.hosts_wanted()), self._now)
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
            self._loader.start_refills()
            self._loader.claim_batch_if_due(self._now)
            if self._free:
                self._commit_now.want(False)
                return self._take_free()
            wake_at: float | None = None
            if self._wire.room():
                slot, host, wake_at = self._ready.pick(now)
                if host is not None and host.queue and not self._leases.valid(host.name, now):
                    self.lost([host.name])  # the lease would not outlive a request
                    # Yield before looking again: the renewal that would make the lease valid
                    # runs on this loop. Without it a host with work left (a robots.txt job) was
                    # picked, found invalid and dropped again and again, the loop never yielding
                    # and the renewal never done (a process at 100% CPU, seen under load).
                    await asyncio.sleep(0)
                    continue
                if slot is not None and host is not None:
                    if host.jobs:
                        self._grant(slot, host, now)
                        continue
                    self._commit_now.want(False)
                    return self._take(slot, host, now)
            if self._over():
                if await self._loader.claim(max(1, self.hosts_wanted()), self._now):
                    continue
                if self._frontier.spent or await self._leases.over():
                    return None
                # Others hold hosts that may still bring work (or a host escaped the
                # bookkeeping, and the leases let it go): ask again in a while.
                wake_at = now + CLAIM_EVERY
            # A worker is idle and nothing may start now: if pages not yet committed may hold
            # links it could fetch, have the sink commit them at once.
            self._commit_now.want(self._wire.room() and self._a_host_waits_for_commits())
            cooling = self._hosts.next_cooling()
            if cooling is not None:
                wake_at = cooling if wake_at is None else min(wake_at, cooling)
            try:
                async with asyncio.timeout_at(wake_at):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _grant(self, slot: Slot, host: HostState, now: float) -> None:
        url, granted = host.jobs.popleft()
        self._ready.rotate(slot, host)
        if granted.done():  # its waiter was cancelled
            self._ready.offer(slot)
            return
        self._start_request(slot, host, now, url)
        granted.set_result(None)
        self._ready.offer(slot)

    def _start_request(self, slot: Slot, host: HostState, now: float, url: str) -> None:
        host.active += 1
        slot.active += 1
        slot.next_start = max(slot.next_start, now + slot.delay)
        if self._slots is not None:  # (the fetch stage tells when it starts: `started`)
            self._ledger.unstarted_request(url)
        if host.idle_kept:  # it will reuse the connection kept open for it
            self._keep_alive.reused(host)

    def _take(self, slot: Slot, host: HostState, now: float) -> Assignment:
        request = host.queue.popleft()
        self._ready.rotate(slot, host)
        self._start_request(slot, host, now, request.identity)
        self._ledger.handed_out(request.identity, host.name)
        self._ready.offer(slot)
        self._loader.want_refill(host)
        return Assignment(request)

    def _take_free(self) -> Assignment:
        host, assignment = self._free.popleft()
        self._ledger.handed_out(assignment.request.identity, host.name)
        self._loader.want_refill(host)
        self._release_if_idle(host)
        return assignment

    def _over(self) -> bool:
        if not self._ledger.settled:
            return False
        if self._frontier.spent:
            return True  # the tasks still running (robots.txt, sitemaps) are cancelled
        if self._tasks_running:
            return False
        return not self._loader.pending_hosts and not self._window.more

    def _a_host_waits_for_commits(self) -> bool:
        """Has a host pages not yet stored, no queued request and room in its slot? Its pages'
        links may be its next requests, so the sink should commit now. A host with a queue
        needs no commit to go on: with this test a crawl of one busy host commits in batches
        (in the cpu benchmark every commit was eager before, 8 pages each against 200). Looks
        only at hosts with unstored pages (bounded by the pages in flight), not at every host."""
        for name in self._ledger.hosts_unstored():
            host = self._hosts.get(name)
            if host is None:
                return True  # released meanwhile: its links would bring it back
            slot = host.slot
            if host.queue or host.maybe_pending or host.refilling:
                continue  # it has work, or the frontier has some for it
            if slot is None or slot.active < slot.concurrency:
                return True
        return False

    def _done_with(self, host: HostState, result: FetchResult | None) -> None:
        host.active -= 1
        slot = host.slot
        if slot is not None:
            slot.active -= 1
            if result is not None and self._limits.autothrottle:
                throttle(slot, result, self._limits, self._now())
            self._ready.offer(slot)
        self._release_if_idle(host)

    # The dispatcher's tasks, and hosts let go ---------------------------------------------------

    def _start(self, work: Coroutine[Any, Any, None], name: str) -> None:
        assert self._tasks is not None, "tasks start from the dispatcher's own run()"
        task = self._tasks.create_task(work, name=name)
        self._tasks_running += 1
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks_running -= 1
        self._changed.set()  # the dispatcher may be waiting for it: leases, rules, the end

    def _release_if_idle(self, host: HostState) -> None:
        if self._ledger.unstored_of(host.name) or host.busy():
            return  # its pages are on their way to the sink: its lease stays ours till then
        slot, now = host.slot, self._now()
        state = HostPoliteness(host.name) if slot is None else politeness_of(host.name, slot, now)
        if self._hosts.release_if_idle(host, now):
            more = self._window.released(host.name)
            release = self._leases.release(state)
            if self._tasks is None:
                release.close()  # the dispatcher has ended: the leases' close() writes it
            else:
                self._start(release, f"release {host.name}")
            self._keep_alive.released(host)
            if more:
                self._changed.set()  # room for a host from the table

    def _now(self) -> float:
        if self._clock is None:  # the loop's clock, which timeouts use; looked up once
            self._clock = asyncio.get_running_loop().time
        return self._clock()
