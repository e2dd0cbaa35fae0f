"""Which hosts this process may crawl: the dispatcher's seam to the backend's host leases.

The dispatcher (`scheduler.py`) asks a `HostLeases` (store/base.py) for hosts to work on and
tells it when it lets one go, whatever the backend. With one process on a crawl (SQLite) every
host is its own: the leases live in its memory and nothing needs renewing. With several on
PostgreSQL, a host is leased to one process at a time: `keep_leases` renews the leases, claims
hosts up to this process's fair share and hands back those over it (`hosts_to_drain`), and a
host travels from owner to owner with its politeness state, so per-host concurrency, delay,
Crawl-delay and backoff hold across all of them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

from scraper.config import FetchConfig
from scraper.crawl.hosts import HostState, Slot
from scraper.store.base import HostLeases, HostPoliteness


def request_margin(fetch: FetchConfig) -> float:
    """The longest a dispatched request can take, retries and their waits included: a lease
    must have this much left for a request to start under it."""
    waits = max(fetch.retry_backoff_max, fetch.max_retry_after) + fetch.retry_backoff
    return (fetch.retries + 1) * fetch.total_timeout + fetch.retries * waits


def useful_slots(host: HostState) -> int:
    """How many of fetch.concurrency's slots the host can keep busy: its slot's concurrency, or
    for a host with a delay about latency ÷ delay (one request starts per delay, each lasts its
    latency), once its latency is known; none once it has no work left."""
    slot = host.slot
    if slot is None or not (host.queue or host.maybe_pending):
        return 0
    slots = slot.concurrency
    if slot.delay > 0 and slot.latency > 0:  # known once it has answered
        slots = min(slots, max(1, math.ceil(slot.latency / slot.delay)))
    return slots


def hosts_to_drain(
    concurrency: int, held: list[HostState], count: int, in_hand: Callable[[HostState], int]
) -> list[HostState]:
    """Which of the held hosts with work to hand back, up to `count` (those over the fair
    share), keeping enough to fill fetch.concurrency's slots: a host gains from moving to
    another process only while this one has too few slots for all its hosts at once (else
    the processes that took on fewer run out first and idle). Moving one costs it its
    requests active, a commit and a claim (~0.5 s), so the hosts with the least in hand
    (active or unstored: `in_hand`) go first."""
    with_work = [host for host in held if useful_slots(host)]
    useful = sum(useful_slots(host) for host in with_work)
    chosen: list[HostState] = []
    for host in sorted(with_work, key=in_hand):
        if len(chosen) >= count or useful - useful_slots(host) < concurrency:
            break
        chosen.append(host)
        useful -= useful_slots(host)
    return chosen


def politeness_of(host: str, slot: Slot, now: float) -> HostPoliteness:
    """What a released host leaves for its next owner: its slot's state."""
    return HostPoliteness(
        host=host,
        wait=min(max(0.0, slot.next_start - now), slot.delay + slot.backoff + 60.0),
        delay=slot.delay,
        concurrency=slot.concurrency,
        crawl_delay=slot.min_delay,
        backoff=slot.backoff,
    )


def adopt(slot: Slot, grant: HostPoliteness, now: float) -> None:
    """Continue from the state the host's last owner left (None: the config's)."""
    slot.next_start = max(slot.next_start, now + grant.wait)
    if grant.crawl_delay is not None:
        slot.min_delay = max(slot.min_delay, grant.crawl_delay)
    if grant.delay is not None:
        slot.delay = max(grant.delay, slot.min_delay)
    if grant.concurrency is not None:
        slot.concurrency = max(1, min(grant.concurrency, slot.concurrency))
    if grant.backoff is not None:
        slot.backoff = grant.backoff


class LeaseHolder(Protocol):
    """The dispatcher, as the LeaseKeeper sees it."""

    def granted(self, grants: list[HostPoliteness]) -> None: ...

    def lost(self, hosts: list[str]) -> None: ...

    def hosts_wanted(self) -> int: ...

    def give_back(self, count: int) -> None: ...

    @property
    def hosts_held(self) -> int: ...


CLAIM_EVERY = 0.25  # seconds between two looks for hosts to take, when there is room for more


async def keep_leases(leases: HostLeases, holder: LeaseHolder) -> None:
    """Renew the leases every `leases.renew_every` seconds, and claim hosts while there is room
    every CLAIM_EVERY seconds, until cancelled (the dispatcher's TaskGroup ends it with the
    crawl)."""
    renew_every = leases.renew_every
    if renew_every is None:
        return  # nothing expires, and hosts come only from this process's claims
    loop = asyncio.get_running_loop()
    tick = min(CLAIM_EVERY, renew_every)
    renew_at = loop.time() + renew_every
    while True:
        await asyncio.sleep(tick)
        if loop.time() >= renew_at:
            renew_at = loop.time() + renew_every
            lost = await leases.renew()
            if lost:
                holder.lost(lost)
        share = await leases.fair_share()
        if holder.hosts_held > share:  # more processes now, or fewer hosts with work: share
            holder.give_back(holder.hosts_held - share)
        wanted = min(holder.hosts_wanted(), share - holder.hosts_held)
        if wanted > 0:
            grants = await leases.claim(wanted)
            if grants:
                holder.granted(grants)
