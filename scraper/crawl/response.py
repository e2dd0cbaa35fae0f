"""Reading a response: its status judged, its body read within the limits, a FetchResult made.

- 429 and 5xx raise `Retryable` (with the server's Retry-After); other 4xx are the answer.
- A 3xx keeps its Location (canonical) as `final_url`, the next hop; a 304 keeps its own URL.
- A type other than HTML is recorded, not downloaded, unless `any_type` (robots.txt, sitemaps).
- A body over fetch.max_bytes is abandoned (`too_large`), counted after decompression; with a
  `body_limit` (robots.txt), the first `body_limit` bytes are kept instead.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from scraper.crawl.failures import web_text
from scraper.crawl.retries import Retryable, parse_retry_after
from scraper.models import CrawlRequest, ErrorKind, FetchResult
from scraper.urls import canonicalize

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
READ_CHUNK = 64 * 1024


async def read_response(
    response: aiohttp.ClientResponse,
    request: CrawlRequest,
    *,
    attempt: int,
    fetched_at: str,
    started: float,
    max_bytes: int,
    any_type: bool = False,
    body_limit: int | None = None,
    retry_statuses: frozenset[int] = frozenset(),
) -> FetchResult:
    """The result of attempt number `attempt` of `request`, timed from `started` (a
    perf_counter reading); raises Retryable for a 429 or a 5xx, and for `retry_statuses`
    (fetch.blocked_status with fetch.sessions: the next attempt is a new session's)."""
    content_type = response.headers.get("Content-Type")
    mime = content_type.split(";", 1)[0].strip().lower() if content_type else None
    common: dict[str, Any] = {
        "request": request,
        "fetched_at": fetched_at,
        "attempts": attempt,
        "status": response.status,
        "final_url": str(response.url),
        "content_type": content_type,
        "etag": response.headers.get("ETag"),
        "last_modified": response.headers.get("Last-Modified"),
    }

    def result(**fields: Any) -> FetchResult:
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return FetchResult(**common, elapsed_ms=elapsed, **fields)

    status = response.status
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise Retryable(result(error_kind=ErrorKind.HTTP, error=_http_error(response)), retry_after)
    if status in retry_statuses:
        raise Retryable(result(error_kind=ErrorKind.HTTP, error=_http_error(response)))
    if status >= 400:
        return result(error_kind=ErrorKind.HTTP, error=_http_error(response))
    if status >= 300:  # a redirect (its target is the next hop), or 304 Not Modified
        location = response.headers.get("Location")
        target = canonicalize(location, request.url) if location else None
        common["final_url"] = target if status != 304 else common["final_url"]
        return result()
    if mime is not None and mime not in HTML_TYPES and not any_type:
        return result(bytes=response.content_length)  # recorded, not downloaded nor parsed
    limit = body_limit or max_bytes
    declared = response.content_length
    plain = "Content-Encoding" not in response.headers
    if declared is not None and declared > limit and plain and body_limit is None:
        return result(bytes=declared, error_kind=ErrorKind.TOO_LARGE, error=_too_large(limit))
    if declared is not None and declared <= limit and plain:
        whole = await response.read()  # one await: its size is declared, within the limit
        return result(bytes=len(whole), body=whole)
    body = bytearray()
    # Counted after decompression: aiohttp's stream yields decoded bytes.
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        body += chunk
        if len(body) > limit:
            if body_limit is not None:  # the first body_limit bytes are what is wanted
                return result(bytes=limit, body=bytes(body[:limit]))
            return result(bytes=len(body), error_kind=ErrorKind.TOO_LARGE, error=_too_large(limit))
    return result(bytes=len(body), body=bytes(body))


def _http_error(response: aiohttp.ClientResponse) -> str:
    return f"HTTP {response.status} {web_text(response.reason or '')}".strip()


def _too_large(limit: int) -> str:
    return f"body larger than fetch.max_bytes ({limit} bytes); abandoned"
