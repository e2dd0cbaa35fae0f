"""What the dispatcher and the fetch stage share: the connection slots, and the dispatcher's side
of them, told as requests go on and off the wire.

Built first and given to both (`Fetcher(..., wire=..., listener=...)`, `Scheduler(..., wire=...)`),
so neither needs the other to be built: the fetch stage tells it when a request starts (its
slot's delay counts from then, and it is no longer unstarted in the ledger), when one ends (the
dispatcher may hand out another), asks it whether a connection may stay open (the keep-alive
budget) and how long a retry waits for its host's delay. The dispatcher reads the same slots
before it hands out (nothing while no connection slot is free), and keeps its hosts and its
ledger here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from scraper.crawl.hosts import HostTable, Limits
from scraper.crawl.keep_alive import KeepAlive
from scraper.crawl.ledger import Ledger
from scraper.crawl.wire import WireSlots
from scraper.models import CrawlRequest
from scraper.urls import host_key


class OnTheWire:
    """The WireListener (ports.py) of the dispatcher, with the state it shares with it: the
    connection slots (`slots`; None: no fetch stage's to respect, a dispatcher's own tests), the
    hosts held (`hosts`), the `ledger`, the `keep_alive_budget`, and `changed`, set when the
    dispatcher may have something new to hand out."""

    def __init__(
        self,
        limits: Limits,
        *,
        slots: WireSlots | None = None,
        keep_alive: KeepAlive | None = None,
    ) -> None:
        self.limits = limits
        self.slots = slots
        self.hosts = HostTable(limits)
        self.ledger = Ledger()
        self.keep_alive_budget = keep_alive or KeepAlive(0)
        self.changed = asyncio.Event()
        self._clock: Callable[[], float] | None = None

    def room(self) -> bool:
        """Is there a free connection slot for one more request? Handing out more would make a
        request wait for one, and start later than the moment its slot's delay was set for."""
        slots = self.slots
        return slots is None or slots.in_use + self.ledger.unstarted < slots.limit

    # The fetch stage's side: WireListener -----------------------------------------------------

    def started(self, request: CrawlRequest, first: bool) -> None:
        """The fetch stage put a request on the wire: its slot's delay counts from now (a
        request may wait for a connection slot, or retry, after it was handed out)."""
        if first:
            self.ledger.started(request.identity)
        host = self.hosts.get(host_key(request.url))
        if host is not None and host.slot is not None:
            slot = host.slot
            slot.next_start = max(slot.next_start, self.now() + slot.delay)

    def ended(self) -> None:
        """A request left the wire (done, or waiting out a retry's backoff): room for another."""
        self.changed.set()

    def keep_alive(self, request: CrawlRequest) -> bool:
        """May the connection of `request`, about to go out, stay open after it? Only if its host
        has work queued that may start soon, and within the budget of kept connections: so open
        sockets stay under fetch.concurrency plus that budget, whatever the number of hosts."""
        return self.keep_alive_budget.may_keep(self.hosts.get(host_key(request.url)), self.now())

    def not_before(self, request: CrawlRequest) -> float:
        """Seconds until the request's slot allows another start: a retry waits for it too, so
        the delay holds between an attempt and its retry."""
        host = self.hosts.get(host_key(request.url))
        if host is None or host.slot is None:
            return 0.0
        return max(0.0, host.slot.next_start - self.now())

    def now(self) -> float:
        """The loop's clock, which timeouts use (looked up once): the dispatcher's too."""
        if self._clock is None:
            self._clock = asyncio.get_running_loop().time
        return self._clock()
