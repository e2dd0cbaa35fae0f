"""The connection slots: how many requests may be on the wire at once, and who is told.

`WireSlots` is a semaphore whose size can shrink and grow back: fetch.concurrency (or what the
open-files limit allows, `sockets.socket_budget`) at most, fewer while the process is out of
sockets (`out_of_sockets.py` shrinks it; connections that succeed grow it back). A request holds
a slot only while it is on the wire, so one waiting out a retry's backoff leaves it to others.

`Everyone` is the `WireListener` (ports.py) of a fetcher with no dispatcher to tell.
"""

from __future__ import annotations

import asyncio
from collections import deque

from scraper.models import CrawlRequest

SOCKETS_RECOVERY = 50  # connections that succeed in a row before one more slot is allowed back


class Everyone:
    """No dispatcher to tell: every connection may stay open (aiohttp's own behaviour), and a
    retry waits for its backoff only."""

    def started(self, request: CrawlRequest, first: bool) -> None:
        pass

    def ended(self) -> None:
        pass

    def keep_alive(self, request: CrawlRequest) -> bool:
        return True

    def not_before(self, request: CrawlRequest) -> float:
        return 0.0


class WireSlots:
    """A semaphore whose size can shrink and grow back: the connection slots. At most `limit`
    requests on the wire (`in_use`); `limit` drops when the process runs out of sockets, and
    climbs back to `configured` one slot per SOCKETS_RECOVERY connections made in a row."""

    def __init__(self, limit: int) -> None:
        self.configured = self.limit = limit
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._streak = 0

    async def acquire(self) -> None:
        while self.in_use >= self.limit or self._waiters:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # it was this one's turn: pass it on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self.in_use < self.limit:
                break
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_use
        for waiter in self._waiters:
            if free <= 0:
                break
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def shrink(self) -> int:
        """Out of sockets: no more than one fewer than are open now (at least one); the new
        limit."""
        self.limit = max(1, min(self.limit, self.in_use - 1))
        self._streak = 0
        return self.limit

    def connected(self) -> None:
        """A connection was made: after enough in a row, one more slot comes back."""
        if self.limit >= self.configured:
            return
        self._streak += 1
        if self._streak >= SOCKETS_RECOVERY:
            self._streak = 0
            self.limit += 1
            self._wake()
