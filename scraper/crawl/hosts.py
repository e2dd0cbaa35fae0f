"""Per-host and per-slot state: each host's queue and robots.txt, each slot's politeness.

A **host** (host and port, `urls.host_key`) has its small queue of leased requests, its
robots.txt rules (RFC 9309: per host) and the jobs (robots.txt, sitemaps) waiting for their turn.
A **slot** is the unit of politeness (`fetch.politeness_key`): one host, every host of one
registrable domain, or every host on one IP address. It has the requests active (handed out and
not done), the concurrency and delay, the earliest moment the next request may start, and the
throttle state that `throttle` tunes from each fetch's outcome (AIMD: see docs/guides/crawling.md,
Politeness).

`HostTable` holds the hosts the crawl has work for and their slots, and releases a host once it
has nothing left to do, and its slot once no host holds it and its delay has passed (a throttled
slot is remembered a while longer, so it does not come back at full speed): memory does not grow
with the hosts a crawl meets. The dispatcher (`scheduler.py`) decides, from this state, which
request goes out next.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver

from scraper.crawl.dns import address_of
from scraper.crawl.ports import HostRules
from scraper.domains import domain_of_host_key, host_name
from scraper.models import CrawlRequest, ErrorKind, FetchResult

KEEP_RELEASED = 20  # released slots whose last settings the stats still show
BACKOFF_MAX = 60.0  # seconds: the longest pause a run of 429/503 without Retry-After reaches
# A throttled slot with no host left is remembered this long after that, then forgotten
# (a host that comes back later starts afresh). Without a bound, every host a crawl ever
# throttled would stay in memory.
THROTTLE_MEMORY = 300.0

HostSettings = dict[str, float | int]  # a slot's settings as the stats show them (snapshot())
KeyOf = Callable[[str], str]  # host key -> politeness key, when it needs no look-up
ResolveKey = Callable[[str], Awaitable[str]]  # host key -> politeness key, after DNS


class _AllowAll:
    """The rules of a crawl that reads no robots.txt."""

    delay: float | None = None
    unavailable = False
    skip_kind = ErrorKind.ROBOTS

    def skip_reason(self, url: str) -> str | None:
        return None


ALLOW_ALL: HostRules = _AllowAll()


@dataclass(frozen=True, slots=True)
class Limits:
    per_host_concurrency: int = 8  # per slot (the politeness key)
    per_host_delay: float = 0.0
    queue_size: int = 1000
    autothrottle: bool = True
    max_retry_after: float = 60.0  # the longest pause a Retry-After header can ask for
    max_hosts: int = 0  # hosts held in memory at once (0: crawl.queue_size)

    @property
    def host_window(self) -> int:
        return self.max_hosts or max(self.queue_size, 16)


class Slot:
    """The politeness state of one key: shared by every host that maps to it."""

    __slots__ = (
        "active",
        "backoff",
        "best_latency",
        "concurrency",
        "cool_until",
        "delay",
        "heap_at",
        "key",
        "latency",
        "members",
        "min_delay",
        "next_start",
        "ok_streak",
        "ring",
    )

    def __init__(self, key: str, limits: Limits) -> None:
        self.key = key
        # Requests (pages, robots.txt, sitemaps) handed out and not yet done: on the wire, or
        # waiting for a connection slot or a retry. ("In flight" is on the wire only.)
        self.active = 0
        self.next_start = 0.0  # loop time before which no request may start
        self.concurrency = limits.per_host_concurrency
        self.delay = self.min_delay = limits.per_host_delay
        self.backoff = 0.0
        self.latency = 0.0
        self.best_latency = 0.0
        self.ok_streak = 0
        self.ring: deque[HostState] = deque()  # its hosts that may have work, in turn
        self.members = 0  # hosts held that map here
        self.heap_at: float | None = None  # the time of its entry in the ready heap, if any
        self.cool_until = 0.0  # with no host left: when it may be forgotten

    @property
    def throttled(self) -> bool:
        return self.backoff > 0.05 or self.delay > self.min_delay + 0.001

    def snapshot(self) -> HostSettings:
        return {
            "queued": sum(len(host.queue) for host in self.ring),
            "in_flight": self.active,  # (the key the crawl's stored counters have always had)
            "concurrency": self.concurrency,
            "delay_s": round(self.delay, 3),
            "latency_ms": round(self.latency * 1000, 1),
        }


class HostState:
    """One host's queue, robots.txt rules and waiting jobs; dropped when it has nothing to do."""

    __slots__ = (
        "active",
        "gating",
        "idle_kept",
        "in_ring",
        "jobs",
        "maybe_pending",
        "name",
        "queue",
        "refill_queued",
        "refilling",
        "rules",
        "slot",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.slot: Slot | None = None  # None while its key is being worked out (an IP)
        self.queue: deque[CrawlRequest] = deque()  # leased requests to fetch
        # robots.txt and sitemaps waiting for their turn: (URL, set when it is granted)
        self.jobs: deque[tuple[str, asyncio.Future[None]]] = deque()
        self.maybe_pending = False  # the frontier may hold pending URLs of this host
        self.refilling = False
        self.refill_queued = False
        self.gating = False  # its robots.txt is being read
        self.rules: HostRules | None = None
        self.in_ring = False
        self.active = 0  # its requests handed out and not yet done
        self.idle_kept = 0  # its connections we let stay open, idle (keep-alive budget)

    def has_work(self) -> bool:
        """Something that may go out when its slot allows: a job, or a request once the rules
        are known."""
        return bool(self.jobs) or (self.rules is not None and bool(self.queue))

    def busy(self) -> bool:
        return bool(
            self.slot is None  # its key (an IP address) is being looked up
            or self.queue
            or self.jobs
            or self.active
            or self.maybe_pending
            or self.refilling
            or self.gating
        )


class HostTable:
    """The hosts the crawl has work for, by host key, and their slots by politeness key. A host
    with nothing to do costs no memory: it is released, and so is its slot once no host holds
    it and it has cooled down; only the last few released slots keep their settings, for the
    stats."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._held: dict[str, HostState] = {}
        self._slots: dict[str, Slot] = {}
        self._released: dict[str, HostSettings] = {}
        # Slots no host holds, kept until a moment (their delay, or THROTTLE_MEMORY): a heap of
        # (moment, tie-breaker, slot), released in order as time passes; no scan.
        self._cooling: list[tuple[float, int, Slot]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        """Hosts held in memory now."""
        return len(self._held)

    def held(self) -> list[HostState]:
        return list(self._held.values())

    def slots(self) -> int:
        """Slots held in memory now (cooling ones included)."""
        return len(self._slots)

    def get(self, name: str) -> HostState | None:
        return self._held.get(name)

    def hold(self, name: str) -> tuple[HostState, bool]:
        """The host's state, and whether it is new (not held before)."""
        host = self._held.get(name)
        if host is not None:
            return host, False
        host = self._held[name] = HostState(name)
        return host, True

    def join(self, host: HostState, key: str) -> Slot:
        """Put the host in the slot of `key` (made, or kept from cooling, as needed)."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = Slot(key, self._limits)
        slot.members += 1
        host.slot = slot
        return slot

    def release_if_idle(self, host: HostState, now: float) -> bool:
        """Drop the host's state if it has nothing to do; whether it was dropped."""
        if host.busy() or self._held.get(host.name) is not host:
            return False
        del self._held[host.name]
        slot = host.slot
        if slot is not None:
            slot.members -= 1
            if slot.members == 0:
                until = max(slot.next_start, now + (THROTTLE_MEMORY if slot.throttled else 0.0))
                if until <= now and not slot.active:
                    self._release_slot(slot)
                else:
                    slot.cool_until = until
                    heapq.heappush(self._cooling, (until, next(self._order), slot))
        return True

    def cool(self, now: float) -> None:
        """Release the slots whose cooling time has come (and that no host took again)."""
        while self._cooling and self._cooling[0][0] <= now:
            until, _, slot = heapq.heappop(self._cooling)
            if until != slot.cool_until:
                continue  # taken again by a host since, and released again later
            if slot.members == 0 and not slot.active and self._slots.get(slot.key) is slot:
                self._release_slot(slot)

    def next_cooling(self) -> float | None:
        return self._cooling[0][0] if self._cooling else None

    def _release_slot(self, slot: Slot) -> None:
        del self._slots[slot.key]
        self._released[slot.key] = slot.snapshot()
        if len(self._released) > KEEP_RELEASED:
            del self._released[next(iter(self._released))]

    def snapshot(self) -> dict[str, HostSettings]:
        """Each slot's settings now; for slots already released, as they were then."""
        current = {key: slot.snapshot() for key, slot in self._slots.items()}
        return {**self._released, **current}


def throttle(slot: Slot, result: FetchResult, limits: Limits, now: float) -> None:
    """Tune the slot from one fetch's outcome: AIMD, see docs/guides/crawling.md (Politeness).

    A 429 or 503 with Retry-After pauses the slot for what the server asked (capped by
    fetch.max_retry_after), and only that: a rate limiter that answers every new URL's first
    request with `429, Retry-After: 1` must cost a second each time, not a backoff that doubles
    per 429 to a minute. Without Retry-After the pause is a backoff that doubles with each such
    answer (1 s up to 60 s). A round of successes (as many in a row as the slot's concurrency)
    clears the backoff."""
    if result.throttled:
        if result.retry_after is not None:
            pause = min(result.retry_after, limits.max_retry_after)
        else:
            slot.backoff = min(max(2 * slot.backoff, 1.0), BACKOFF_MAX)
            pause = slot.backoff
        slot.next_start = max(slot.next_start, now + pause)
        slot.concurrency = max(1, slot.concurrency // 2)
        slot.delay = max(slot.delay, slot.latency, slot.min_delay)
        slot.ok_streak = 0
        return
    if (
        result.error_kind in (ErrorKind.TIMEOUT, ErrorKind.CONNECTION)
        or (result.status or 0) >= 500
    ):
        slot.concurrency = max(1, slot.concurrency - 1)
        slot.ok_streak = 0
        return
    if result.error_kind == ErrorKind.DNS:
        return  # no server answered: nothing learnt about its load
    latency = (result.elapsed_ms or 0.0) / 1000
    slot.latency = latency if not slot.latency else 0.8 * slot.latency + 0.2 * latency
    slot.best_latency = min(slot.best_latency or latency, latency)
    slot.backoff /= 2
    slot.delay = max(slot.min_delay, slot.delay * 0.8 if slot.delay > 0.01 else 0.0)
    if slot.latency > max(4 * slot.best_latency, 0.5):  # the server is queueing our requests
        slot.concurrency = max(1, slot.concurrency - 1)
        slot.ok_streak = 0
        return
    slot.ok_streak += 1
    if slot.ok_streak >= slot.concurrency:  # a round of successes
        slot.backoff = 0.0
        slot.ok_streak = 0
        if slot.concurrency < limits.per_host_concurrency:
            slot.concurrency += 1


def politeness_keys(
    kind: str, resolver: AbstractResolver
) -> tuple[KeyOf | None, ResolveKey | None]:
    """What a host's slot is keyed on (fetch.politeness_key): the host itself, its registrable
    domain, or its IP address (looked up through `resolver`: the fetch stage's, and its cache)."""
    if kind == "domain":
        return domain_of_host_key, None
    if kind == "ip":

        async def address(host: str) -> str:
            return await address_of(resolver, host_name(host)) or host

        return None, address
    return None, None
