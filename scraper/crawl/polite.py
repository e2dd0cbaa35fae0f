"""The fetch stage as robots.txt and sitemaps see it: each of their requests waits for its turn on
its host's slot, as a page does, so it counts in the slot's concurrency and starts its delay
(the dispatcher, `scheduler.py`, grants turns; its `polite` is this, built with it)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from scraper.crawl.ports import FetchStage
from scraper.models import CrawlRequest, FetchResult


class Turns(Protocol):
    """Who grants turns on hosts' slots (the dispatcher)."""

    def turn(self, url: str) -> AbstractAsyncContextManager[None]:
        """Wait for a turn on the slot of `url`'s host, and hold it for the block."""
        ...

    def observe(self, url: str, result: FetchResult) -> None:
        """A request's outcome (robots.txt answering 429, say) tunes the slot."""
        ...


class _NoFetch:
    """A dispatcher made without a fetch stage (its own tests): nothing may fetch through it."""

    async def fetch(self, request: CrawlRequest, **options: Any) -> FetchResult:
        raise RuntimeError(f"{request.url}: the dispatcher was made without a fetch stage")


NO_FETCH: FetchStage = _NoFetch()


class PoliteFetch:
    """A FetchStage whose every request takes its turn on its host's slot first."""

    def __init__(self, fetcher: FetchStage, turns: Turns) -> None:
        self._fetcher = fetcher
        self._turns = turns

    async def fetch(self, request: CrawlRequest, **options: Any) -> FetchResult:
        """`FetchStage.fetch` (ports.py), its options passed on as they are."""
        async with self._turns.turn(request.url):
            result = await self._fetcher.fetch(request, **options)
            self._turns.observe(request.url, result)
            return result
