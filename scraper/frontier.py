"""The frontier: which URLs are still to fetch, and whether the crawl is over.

`Frontier` is the seam where another backend (a SQLite table, a shared Redis set) stands in.
The contract, which gives exact end-of-crawl detection without polling:

- `add()` admits new requests (de-duplicated, up to the page limit);
- `next()` hands out one request and counts it in flight, or returns None once nothing is queued
  and nothing is in flight, so every worker learns the crawl is over;
- `done()` is called once per request handed out, after the links it led to have been added.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from .models import CrawlRequest


class Frontier(Protocol):
    async def add(self, requests: Iterable[CrawlRequest]) -> int:
        """Admit the requests not seen before; returns how many were admitted."""
        ...

    async def next(self) -> CrawlRequest | None:
        """The next request to fetch, or None when the crawl is over."""
        ...

    async def done(self, request: CrawlRequest) -> None:
        """`request` went all the way through the pipeline."""
        ...

    def queued(self) -> int: ...

    def in_flight(self) -> int: ...


_OVER = CrawlRequest(url="")  # a sentinel; each worker that sees it puts it back for the next


class MemoryFrontier:
    """An asyncio.Queue plus a set of the URLs seen; lives and dies with the crawl.

    The queue has no item bound: the fetch workers both consume it and (through the parse stage)
    feed it, so a bound here could deadlock the cycle. `max_pages` bounds it when set.
    """

    def __init__(self, max_pages: int = 0) -> None:
        self._queue: asyncio.Queue[CrawlRequest] = asyncio.Queue()
        self._seen: set[str] = set()
        self._max_pages = max_pages
        self._in_flight = 0
        self._over = False
        self.admitted = 0

    async def add(self, requests: Iterable[CrawlRequest]) -> int:
        added = 0
        for request in requests:
            if self._max_pages and self.admitted >= self._max_pages:
                break
            if request.url in self._seen:
                continue
            self._seen.add(request.url)
            self._queue.put_nowait(request)
            self.admitted += 1
            added += 1
        self._end_if_over()
        return added

    async def next(self) -> CrawlRequest | None:
        request = await self._queue.get()
        if request is _OVER:
            self._queue.put_nowait(_OVER)
            return None
        self._in_flight += 1
        return request

    async def done(self, request: CrawlRequest) -> None:
        self._in_flight -= 1
        self._end_if_over()

    def queued(self) -> int:
        return self._queue.qsize() - self._over

    def in_flight(self) -> int:
        return self._in_flight

    def _end_if_over(self) -> None:
        if self._in_flight == 0 and self._queue.empty():
            self._over = True
            self._queue.put_nowait(_OVER)
