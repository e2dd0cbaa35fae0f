"""robots.txt: fetched once per host and cached for the crawl, parsed with protego.

RFC 9309's odd cases: a 4xx robots.txt means everything is allowed; a 5xx or an unreachable host
means nothing is for now: the scheduler holds the host and asks again later (each time after the
fetch stage's own retries), and only after a few rounds records its URLs as skipped.
Crawl-delay becomes the host's minimum delay, and its Sitemap: lines go to the sitemap stage.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from protego import Protego

from scraper.models import CrawlRequest, FetchResult
from scraper.urls import origin

MAX_ROBOTS_BYTES = 500 * 1024  # Google's limit; the rest of a larger file is ignored


class FetchStage(Protocol):
    """What robots.txt needs of the fetch stage (`crawl/fetch.py`'s Fetcher, passed in): this
    module does not import another stage."""

    async def fetch(
        self, request: CrawlRequest, *, any_type: bool, time_limit: float | None
    ) -> FetchResult: ...


class RobotsRules:
    """What one host's robots.txt allows our user agent."""

    def __init__(
        self,
        parser: Protego | None,
        user_agent: str,
        *,
        unavailable: str | None = None,
        sitemaps: tuple[str, ...] = (),
    ) -> None:
        self._parser = parser
        self._agent = user_agent
        self._unavailable = unavailable
        self.sitemaps = sitemaps

    @property
    def unavailable(self) -> bool:
        return self._unavailable is not None

    @property
    def delay(self) -> float | None:
        if self._parser is None:
            return None
        delay = self._parser.crawl_delay(self._agent)
        return float(delay) if delay is not None else None

    def skip_reason(self, url: str) -> str | None:
        if self._unavailable is not None:
            return self._unavailable
        if self._parser is not None and not self._parser.can_fetch(url, self._agent):
            return "disallowed by robots.txt"
        return None


ALLOW_ALL = RobotsRules(None, "")


class RobotsGate:
    """The scheduler's gate: the rules for a host, fetched once and kept in a bounded cache; and
    the moment a site is first met, when its sitemaps can be read."""

    def __init__(
        self,
        fetcher: FetchStage,
        user_agent: str,
        *,
        timeout: float,
        obey: bool = True,
        on_sitemaps: Callable[[str, tuple[str, ...]], None] = lambda origin, urls: None,
        cache_size: int = 10_000,
    ) -> None:
        self._fetcher = fetcher
        self._obey = obey  # False: robots.txt is not read; every host allows everything
        self._agent = user_agent
        self._timeout = timeout
        self._on_sitemaps = on_sitemaps
        self._cache: OrderedDict[str, RobotsRules] = OrderedDict()
        self._cache_size = cache_size

    async def rules(self, host: str, sample_url: str) -> RobotsRules:
        site = origin(sample_url)
        cached = self._cache.get(site)
        if cached is not None:
            self._cache.move_to_end(site)
            return cached
        rules = await self._load(site) if self._obey else ALLOW_ALL
        self._cache[site] = rules
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        if not rules.unavailable:  # while robots.txt disallows everything, sitemaps wait too
            self._on_sitemaps(site, rules.sitemaps)
        return rules

    def forget(self, sample_url: str) -> None:
        """Drop a host's cached rules, so the next `rules()` fetches robots.txt again."""
        self._cache.pop(origin(sample_url), None)

    async def _load(self, site: str) -> RobotsRules:
        result = await self._fetcher.fetch(
            CrawlRequest(url=f"{site}/robots.txt"), any_type=True, time_limit=self._timeout
        )
        status = result.status or 0
        if 200 <= status < 300 and result.body is not None:
            text = result.body[:MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
            parser = await asyncio.to_thread(Protego.parse, text)  # big files take a while
            return RobotsRules(parser, self._agent, sitemaps=tuple(parser.sitemaps))
        if 400 <= status < 500:
            return RobotsRules(None, self._agent)
        why = result.error or f"HTTP {status}"
        return RobotsRules(None, self._agent, unavailable=f"robots.txt unavailable: {why}")
