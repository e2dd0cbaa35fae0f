"""The host loader: which hosts the dispatcher holds, and what each has queued.

A host comes in when its lease is granted (a claim: `granted`, `claim`, `claim_batch_if_due`)
or when this process's own stored pages find it and the host window has room (`note_pending`).
Held, it is joined to its politeness slot (keyed by name, or after an IP look-up in a task),
and while the frontier may hold pending URLs of it (`maybe_pending`) its queue is refilled from
the frontier, a few requests at a time (twice the per-host concurrency, at least 4), as long as
memory allows (crawl.queue_size requests queued in all).

Each leased request is **admitted**: to its host's queue, or, if it needs no fetch (fresh
enough, or ruled out by robots.txt, or its host refused), to the free queue, which the
dispatcher hands out at once. A host's requests wait for its robots.txt rules (`HostGate`,
loaded in a task: rounds of asking included) before any is admitted to go out.

Refills, rule loads and IP look-ups run as tasks the dispatcher owns (`start`: its TaskGroup);
a host whose state may have become idle is given back to it (`release_if_idle`). Bookkeeping
shared with the dispatcher (the host table, the ready heap, the ledger, the host window) is
passed in, built by it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from scraper.crawl.host_window import HostWindow
from scraper.crawl.hosts import ALLOW_ALL, HostState, HostTable, KeyOf, Limits, ResolveKey
from scraper.crawl.leases import adopt
from scraper.crawl.ledger import Ledger
from scraper.crawl.ports import HostGate
from scraper.crawl.ready import ReadyHeap
from scraper.models import CrawlRequest, ErrorKind
from scraper.store.base import Frontier, HostPoliteness

StartTask = Callable[[Coroutine[Any, Any, None], str], None]


@dataclass(frozen=True, slots=True)
class Assignment:
    """A request handed to a fetch worker. With a `skip_reason` (robots.txt disallows it, or
    cannot be read, or the host is refused) it is recorded with that reason, and the error kind
    `skip_kind`, instead of fetched."""

    request: CrawlRequest
    skip_reason: str | None = None
    skip_kind: ErrorKind = ErrorKind.ROBOTS


class HostLoader:
    """Hosts taken on, their queues refilled from `frontier` and their requests admitted."""

    def __init__(
        self,
        frontier: Frontier,
        limits: Limits,
        *,
        hosts: HostTable,
        ready: ReadyHeap,
        ledger: Ledger,
        window: HostWindow,
        start: StartTask,
        release_if_idle: Callable[[HostState], None],
        gate: HostGate | None = None,
        key_of: KeyOf | None = None,
        resolve_key: ResolveKey | None = None,
    ) -> None:
        self._frontier = frontier
        self._limits = limits
        self._hosts = hosts
        self._ready = ready
        self._ledger = ledger
        self._window = window
        self._draining = window.draining  # being handed back: nothing more loaded there
        self._start = start
        self._release_if_idle = release_if_idle
        self._gate = gate
        self._key_of = key_of
        self._resolve_key = resolve_key  # set: the key needs a look-up (an IP), in a task
        self.free: deque[tuple[HostState, Assignment]] = deque()  # needing no fetch: at once
        self._refills: deque[HostState] = deque()
        self.pending_hosts = 0  # held hosts whose maybe_pending is set
        # A host keeps this many requests queued, refilled once it is down to half of it.
        self._buffer = max(4, 2 * limits.per_host_concurrency)

    # Hosts taken on ---------------------------------------------------------------------------

    def granted(self, grants: list[HostPoliteness], now: float) -> None:
        """These hosts are ours now: crawl on from the state their last owner left (and the
        robots.txt it read, if it did)."""
        for grant in grants:
            self.note_pending(grant.host, force=True)
            host = self._hosts.get(grant.host)
            if host is not None and host.slot is not None:
                adopt(host.slot, grant, now)
                if grant.robots and self._gate is not None and host.rules is None:
                    host.gating = True  # its rules come from the record, not a fetch
                    self._start(self._adopt_rules(host, self._gate, grant.robots), "robots")

    async def claim(self, limit: int, now: Callable[[], float]) -> int:
        """Claim up to `limit` hosts and take them on; how many came."""
        grants = await self._window.claim(limit)
        if grants:
            self.granted(grants, now())
        return len(grants)

    def claim_batch_if_due(self, now: Callable[[], float]) -> None:
        """Start a claim of the batch of hosts the window has room for, if one is due
        (`HostWindow.batch_due`)."""
        room = self._window.batch_due()
        if room:
            self._start(self._claim_batch(room, now), "hosts")

    async def _claim_batch(self, room: int, now: Callable[[], float]) -> None:
        grants = await self._window.claim_batch(room)
        if grants:
            self.granted(grants, now())

    def hold(self, name: str) -> HostState:
        """The host's state, made and joined to its slot if it was not held."""
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
        self._ready.add(host)
        self._release_if_idle(host)

    def note_pending(self, name: str, *, force: bool = False) -> None:
        """The frontier may hold pending URLs of `name`. One not held yet is taken if there is
        room (`force`: it was claimed), or waits in the table for a claim."""
        if name in self._draining:
            return
        host = self._hosts.get(name)
        if host is None:
            if not force and not self._window.may_take(name):
                return  # no room, or another's: a claim finds it, if it is to be had
            host = self.hold(name)
        self.set_maybe_pending(host, True)
        self.want_refill(host)

    def set_maybe_pending(self, host: HostState, value: bool) -> None:
        if host.maybe_pending != value:
            host.maybe_pending = value
            self.pending_hosts += 1 if value else -1

    # Refills ----------------------------------------------------------------------------------

    def want_refill(self, host: HostState) -> None:
        """Queue a refill of the host if it may have more and is down to half its buffer."""
        if host.maybe_pending and not host.refill_queued and len(host.queue) < self._buffer // 2:
            host.refill_queued = True
            self._refills.append(host)

    def start_refills(self) -> None:
        """Start the refills queued, as far as memory allows (crawl.queue_size); the rest resume
        as requests are taken."""
        while self._refills:
            host = self._refills[0]
            if self._hosts.get(host.name) is not host or not host.maybe_pending or host.refilling:
                self._refills.popleft()
                host.refill_queued = False
                continue
            room = self._limits.queue_size - self._ledger.queued
            if room <= 0:
                return  # memory is full; refills resume as requests are taken
            self._refills.popleft()
            host.refill_queued = False
            host.refilling = True
            want = min(self._buffer - len(host.queue), room)
            self._start(self._refill(host, want), f"refill {host.name}")

    async def _refill(self, host: HostState, want: int) -> None:
        try:
            leased = await self._frontier.lease(host.name, want)
        finally:
            host.refilling = False
        if len(leased) < want or host.name in self._draining:
            self.set_maybe_pending(host, False)  # (a drained host's go back with its lease)
        if host.name not in self._draining:
            for request in leased:
                self._admit(host, request)
            if host.rules is None and not host.gating and host.queue:
                self._start_gate(host, host.queue[0].url)
            self._ready.add(host)
        self._release_if_idle(host)

    def _admit(self, host: HostState, request: CrawlRequest) -> None:
        """A leased request: to the host's queue, or, if it needs no fetch (fresh, or robots.txt
        rules it out), to the free queue, handed out at once."""
        self._ledger.queued += 1
        if request.fresh:
            self.free.append((host, Assignment(request)))
            return
        rules = host.rules
        skip = rules.skip_reason(request.url) if rules is not None else None
        if skip is not None:
            assert rules is not None
            self.free.append((host, Assignment(request, skip, rules.skip_kind)))
        else:
            host.queue.append(request)

    # robots.txt -------------------------------------------------------------------------------

    def _start_gate(self, host: HostState, sample_url: str) -> None:
        if self._gate is None:
            return
        host.gating = True
        self._start(self._load_rules(host, self._gate, sample_url), f"robots {host.name}")

    async def _load_rules(self, host: HostState, gate: HostGate, sample_url: str) -> None:
        try:
            rules = await gate.settled_rules(host.name, sample_url)  # (rounds of asking)
        finally:
            host.gating = False
        host.rules = rules
        if rules.delay and host.slot is not None:
            slot = host.slot
            slot.min_delay = max(slot.min_delay, rules.delay)  # robots.txt Crawl-delay
            slot.delay = max(slot.delay, slot.min_delay)
        queued, host.queue = host.queue, deque()
        self._ledger.queued -= len(queued)
        for request in queued:
            self._admit(host, request)
        self._ready.add(host)
        self._release_if_idle(host)

    async def _adopt_rules(self, host: HostState, gate: HostGate, record: str) -> None:
        try:
            await gate.adopt(record)
        finally:
            host.gating = False
        if host.queue:  # its rules are in the gate's cache now: no request to read them
            self._start_gate(host, host.queue[0].url)
