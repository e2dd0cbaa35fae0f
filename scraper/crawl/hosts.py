"""Per-host state: each host's queue, slots, delay and throttling, and which hosts are held.

`HostState` is one host's politeness state and its small queue of leased requests; `throttle`
tunes it from each fetch's outcome (AIMD: see "Adaptive throttling" in the README). `HostTable`
holds the hosts the crawl has work for and releases a host once it has nothing left to do, so
memory does not grow with the hosts a crawl meets. The dispatcher (`scheduler.py`) decides, from
this state, which request goes out next.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

from scraper.models import CrawlRequest, FetchResult

KEEP_RELEASED = 20  # released hosts whose last settings the stats still show

HostSettings = dict[str, float | int]  # a host's settings as the stats show them (snapshot())


class HostRules(Protocol):
    """What robots.txt says about one host (and `skip_kind`: the error kind of a URL it skips)."""

    skip_kind: str

    @property
    def delay(self) -> float | None: ...

    @property
    def unavailable(self) -> bool: ...

    def skip_reason(self, url: str) -> str | None: ...


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

    def snapshot(self) -> HostSettings:
        return {
            "queued": len(self.queue),
            "in_flight": self.in_flight,
            "concurrency": self.concurrency,
            "delay_s": round(self.delay, 3),
            "latency_ms": round(self.latency * 1000, 1),
        }


class HostTable:
    """The hosts the crawl has work for, by host key. A host with nothing to do costs no memory:
    it is released (its state dropped), and only the last few released keep their settings, for
    the stats."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._held: dict[str, HostState] = {}
        self._released: dict[str, HostSettings] = {}

    def __len__(self) -> int:
        """Hosts held in memory now."""
        return len(self._held)

    def get(self, name: str) -> HostState | None:
        return self._held.get(name)

    def hold(self, name: str) -> HostState:
        """The host's state, new if it was not held."""
        host = self._held.get(name)
        if host is None:
            host = self._held[name] = HostState(name, self._limits)
        return host

    def any_pending(self) -> bool:
        """Whether the frontier may still hold pending URLs of some host held."""
        return any(host.maybe_pending for host in self._held.values())

    def release_if_idle(self, host: HostState, now: float) -> None:
        """Drop the host's state if it has nothing to do and is not waiting its turn."""
        if host.idle(now) and not host.in_ring and self._held.get(host.name) is host:
            del self._held[host.name]
            self._released[host.name] = host.snapshot()
            if len(self._released) > KEEP_RELEASED:
                del self._released[next(iter(self._released))]

    def sweep(self, now: float) -> None:
        """Release hosts that were kept for their cool-down or throttling and are idle now."""
        for host in list(self._held.values()):
            self.release_if_idle(host, now)

    def snapshot(self) -> dict[str, HostSettings]:
        """Each host's settings now; for hosts already released, as they were then."""
        current = {name: host.snapshot() for name, host in self._held.items()}
        return {**self._released, **current}


def throttle(host: HostState, result: FetchResult, limits: Limits, now: float) -> None:
    """Tune the host from one fetch's outcome: AIMD, see "Adaptive throttling" in the README."""
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
