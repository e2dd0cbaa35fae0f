"""Redirects the fetch stage follows itself: those of robots.txt and sitemaps.

A page's redirect is not followed here: it comes back with its target in `final_url`, is stored
as it is, and the target becomes a frontier row (`admit.py`), so two URLs that redirect to one
page store it once. robots.txt and sitemaps are no pages: their redirects are followed here,
each hop a request of its own within the crawl's boundary, up to fetch.max_redirects hops, and
a loop stops as soon as a URL comes round again. The result is the last hop's, as the first
request's, with the last URL fetched as `final_url` (or, past the limit, the hop not taken).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from scraper.models import REDIRECTS, CrawlRequest, ErrorKind, FetchResult


async def follow_redirects(
    result: FetchResult,
    fetch_hop: Callable[[CrawlRequest], Awaitable[FetchResult]],
    max_redirects: int,
) -> FetchResult:
    """`result`, or where its redirects lead: each target fetched with `fetch_hop`."""
    request = result.request
    hops = 0
    seen = {request.url}
    while result.status in REDIRECTS and result.final_url and result.error_kind is None:
        target = result.final_url
        if target in seen or hops >= max_redirects:
            why = "a redirect loop" if target in seen else "too many redirects"
            return dataclasses.replace(
                result,
                error_kind=ErrorKind.REDIRECTS,
                error=f"{why} (fetch.max_redirects = {max_redirects})",
            )
        hops += 1
        seen.add(target)
        hop = await fetch_hop(CrawlRequest(url=target))
        if hop.error_kind == ErrorKind.OUT_OF_SCOPE:
            hop = dataclasses.replace(hop, error=f"redirected to {target}: {hop.error}")
        # A hop that redirects again keeps its own target, the next hop; any other ends here.
        where = hop.final_url if hop.status in REDIRECTS else target
        result = dataclasses.replace(hop, request=request, final_url=where)
    return result
