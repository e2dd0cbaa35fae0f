"""Admission: what a fetched page adds to the frontier.

- A parsed page's links (in scope: the parser filtered them) become frontier rows one level
  deeper, within `crawl.max_depth`, less those seen very recently (`SeenCache`).
- A redirect is stored as it is, and its target becomes a frontier row like a link (so two URLs
  that redirect to one page store it once), if in scope; a URL that redirects to itself, or a
  chain longer than `fetch.max_redirects`, is recorded with `error_kind = 'redirects'`.
- A page kept as stored (a 304, or fresher than `crawl.recrawl_after`) is not parsed again: its
  stored links are admitted as if it had been.

Whether a redirect target or a stored link is in scope is decided here without a user's regex
on the event loop: with crawl.include or crawl.exclude set, by `select` (a parse worker, within
parse.timeout: a hostile URL against a backtracking pattern costs a worker, not the crawl).

The frontier's unique key is the truth about which URLs are known; this only spares it repeats.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from scraper.models import CrawlRequest, ErrorKind, FetchResult, PageRecord, request_key
from scraper.parse.procpool import WorkerDied
from scraper.urls import Scope, UrlPolicy, canonicalize

log = logging.getLogger(__name__)

SEEN_CACHE_SIZE = 100_000


class SeenCache:
    """The most recently seen URLs, to spare the database most duplicate inserts.

    Bounded, so memory does not grow with the crawl; the frontier's unique key stays the truth.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        # An OrderedDict, not a dict: evicting a dict's oldest key with next(iter(d)) walks over
        # every key deleted before it, ~40 µs per new URL once 100,000 are cached (0.6 µs here).
        self._urls: collections.OrderedDict[str, None] = collections.OrderedDict()

    def admit(self, urls: Iterable[str]) -> list[str]:
        """The URLs not in the cache, in order, each once, now added to it (when that overflows
        the cache, the oldest go, which may be some of these). One call per page, not per link:
        a page has ~50 links, and most were seen before."""
        cache = self._urls
        fresh = []
        for url in urls:
            if url not in cache:
                cache[url] = None
                fresh.append(url)
        for _ in range(len(cache) - self._size):
            cache.popitem(last=False)
        return fresh

    def __len__(self) -> int:
        return len(self._urls)


def _hop(request: CrawlRequest, target: str, hops: int, status: int | None) -> CrawlRequest:
    """The request a redirect leads to: a GET of its target, for the same callback with the same
    meta; a 307 or 308 keeps the method, headers and body too (a browser's rule)."""
    if status in (307, 308) and (request.method is not None or request.body is not None):
        return dataclasses.replace(
            request,
            url=target,
            referrer=request.url,
            hops=hops,
            etag=None,
            last_modified=None,
            fresh=False,
            key=request_key(target, request.verb, request.body, None),
        )
    return CrawlRequest(
        url=target,
        depth=request.depth,
        referrer=request.url,
        hops=hops,
        callback=request.callback,
        meta=request.meta,
    )


class Admission:
    """The crawl's admission policy: links, redirects and kept pages → frontier rows."""

    def __init__(
        self,
        *,
        scope: Scope,
        policy: UrlPolicy,
        max_depth: int,
        max_redirects: int,
        links_from: Callable[[str], Awaitable[list[str]]],
        select: Callable[[tuple[str, ...], str], Awaitable[tuple[str, ...]]] | None = None,
        seen_cache_size: int = SEEN_CACHE_SIZE,
    ) -> None:
        self._scope = scope
        # The scope's regexes run in `select` (urls.in_scope in a worker); without any, the
        # scope is decided here, at a few µs per URL.
        self._select = select if scope.include or scope.exclude else None
        self._policy = policy
        self._max_depth = max_depth  # 0: no limit
        self._max_redirects = max_redirects  # 0: redirects are stored, never followed
        self._links_from = links_from  # a page's stored links, from the storage backend
        self._seen = SeenCache(seen_cache_size)

    def links(self, parent: CrawlRequest, follow: Sequence[str]) -> tuple[CrawlRequest, ...]:
        """The in-scope links worth a frontier row: within depth, not seen very recently."""
        depth = parent.depth + 1
        if self._max_depth and depth > self._max_depth:
            return ()
        referrer = parent.url
        return tuple(
            CrawlRequest(url=url, depth=depth, referrer=referrer)
            for url in self._seen.admit(follow)
        )

    def requested(
        self, parent: CrawlRequest, requests: Sequence[CrawlRequest]
    ) -> tuple[CrawlRequest, ...]:
        """A spider's requests (in scope: the worker filtered them) worth a frontier row: one
        level deeper than their page, within depth, not seen very recently (by identity)."""
        depth = parent.depth + 1
        if self._max_depth and depth > self._max_depth:
            return ()
        fresh = set(self._seen.admit(request.identity for request in requests))
        referrer = parent.url
        return tuple(
            dataclasses.replace(request, depth=depth, referrer=referrer)
            for request in requests
            if request.identity in fresh
        )

    async def in_scope(self, urls: Sequence[str], *, base: str) -> tuple[str, ...]:
        """Those of `urls` the scope allows (depth aside) as links of the page `base`. Raises
        WorkerDied if deciding it took a worker past parse.timeout."""
        if self._select is None:
            return tuple(url for url in urls if self._scope.allows(url, base=base))
        return await self._select(tuple(urls), base)

    async def redirect(self, result: FetchResult, target: str) -> PageRecord:
        """The record of a redirect to `target`: its child is the target, if it is followed."""
        request = result.request
        target = canonicalize(target, policy=self._policy) or target
        hops = request.hops + 1
        if self._max_redirects == 0:
            return PageRecord(fetch=result)
        if target == request.url or hops > self._max_redirects:
            why = "redirects to itself" if target == request.url else "too many redirects"
            limit = self._max_redirects
            return PageRecord(
                fetch=dataclasses.replace(
                    result,
                    error_kind=ErrorKind.REDIRECTS,
                    error=f"{why} (fetch.max_redirects = {limit})",
                )
            )
        try:
            followed = await self.in_scope([target], base=request.url)
        except WorkerDied as exc:
            why = f"deciding whether to follow it{' ' if exc.timed_out else ': '}{exc}"
            return PageRecord(fetch=result, parse_error=why)
        if not followed:
            return PageRecord(fetch=result)  # out of scope: recorded, not followed
        child = _hop(request, target, hops, result.status)
        return PageRecord(fetch=result, children=(child,))

    async def kept_page(self, result: FetchResult) -> PageRecord:
        """The record of a page kept as stored (a 304, or a fresh page): the stored row stands,
        and so do its links, which are admitted as a parsed page's would be."""
        request = result.request
        links = await self._links_from(request.identity)
        try:
            follow = await self.in_scope(links, base=request.url)
        except WorkerDied as exc:  # the stored row stands; its links are not followed this time
            log.warning("%s: its stored links were not followed: %s", request.url, exc)
            follow = ()
        return PageRecord(fetch=result, children=self.links(request, follow))
