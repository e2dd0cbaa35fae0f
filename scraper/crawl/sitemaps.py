"""Sitemaps: the URLs a site lists in `Sitemap:` lines of robots.txt and at /sitemap.xml.

`SitemapReader` fetches a site's sitemaps, follows indexes a few levels deep, and hands each
sitemap's in-scope URLs to the frontier as the children of a page row for the sitemap itself, so
each is recorded and nothing is lost. Parsing one sitemap is pure and runs in the parse pool
(`parse/sitemap.py`): the reader is given a function that does it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from scraper.crawl.ports import FetchStage
from scraper.models import CrawlRequest, ErrorKind, PageRecord
from scraper.parse.procpool import WorkerDied
from scraper.parse.sitemap import Sitemap, SitemapJob
from scraper.urls import Scope, UrlPolicy, canonicalize

MAX_SITEMAPS_PER_SITE = 100  # sitemaps read per site, indexes included
MAX_INDEX_DEPTH = 3


class SitemapReader:
    """Reads one site's sitemaps; each becomes a stored row whose children are its URLs."""

    def __init__(
        self,
        fetcher: FetchStage,
        parse: Callable[[SitemapJob], Awaitable[Sitemap]],
        emit: Callable[[PageRecord], Awaitable[None]],
        *,
        scope: Scope,
        policy: UrlPolicy,
        max_bytes: int,
    ) -> None:
        self._fetcher = fetcher
        self._parse = parse
        self._emit = emit
        self._scope = scope
        self._policy = policy
        self._max_bytes = max_bytes

    async def read(self, site: str, declared: tuple[str, ...]) -> None:
        """Read the sitemaps robots.txt declared, or else /sitemap.xml if there is one."""
        absolute = (canonicalize(url, f"{site}/", self._policy) for url in declared)
        todo = [(url, 0, True) for url in dict.fromkeys(u for u in absolute if u)]
        todo = todo or [(f"{site}/sitemap.xml", 0, False)]
        seen = {url for url, _, _ in todo}
        while todo and len(seen) <= MAX_SITEMAPS_PER_SITE:
            url, level, declared_here = todo.pop(0)
            children = await self._read_one(url, declared_here)
            if level + 1 < MAX_INDEX_DEPTH:
                for child in children:
                    if child not in seen:
                        seen.add(child)
                        todo.append((child, level + 1, True))

    async def _read_one(self, url: str, declared: bool) -> tuple[str, ...]:
        result = await self._fetcher.fetch(CrawlRequest(url=url, depth=0), any_type=True)
        if not declared and result.status != 200:
            return ()  # no /sitemap.xml (or no answer): a guess that failed is not worth a row
        stored = dataclasses.replace(result, body=None)
        if result.body is None or result.error_kind is not None:
            await self._emit(PageRecord(fetch=stored))
            return ()
        job = SitemapJob(url, result.body, self._max_bytes, self._policy, self._scope)
        try:
            sitemap = await self._parse(job)
        except WorkerDied as exc:  # the parser's process died on it: record it, crawl on
            why = f"parsing it {exc}" if exc.timed_out else str(exc)
            await self._emit(PageRecord(fetch=stored, parse_error=why))
            return ()
        pages = tuple(CrawlRequest(url=page, depth=1, referrer=url) for page in sitemap.pages)
        if sitemap.error is not None:
            stored = dataclasses.replace(stored, error_kind=ErrorKind.SITEMAP, error=sitemap.error)
        await self._emit(PageRecord(fetch=stored, children=pages))
        return sitemap.sitemaps
