"""Reading a response: its status judged, its body read within the limits, a FetchResult made.

- 429 and 5xx raise `Retryable` (with the server's Retry-After); other 4xx are the answer.
- A 3xx keeps its Location (canonical) as `final_url`, the next hop; a 304 keeps its own URL.
- A type other than HTML is recorded, not downloaded, unless `any_type` (robots.txt, sitemaps).
- A body over fetch.max_bytes is abandoned (`too_large`), counted after decompression (ours:
  `decoding.py`); with a `body_limit` (robots.txt), the first `body_limit` bytes are kept instead.
- With `capture` (storage.warc), the result carries its `Exchange`: the request as sent, the
  response as received (its body still encoded), the address connected to. A response whose body
  is not read for parsing (a redirect, an error) has it read for the archive, within the limit.
"""

from __future__ import annotations

import time
from typing import Any, Self

import aiohttp
from aiohttp.connector import Connection

from scraper.crawl.decoding import BodyDecoder, DecodingError
from scraper.crawl.failures import web_text
from scraper.crawl.retries import Retryable, parse_retry_after
from scraper.models import CrawlRequest, ErrorKind, Exchange, FetchResult
from scraper.urls import canonicalize

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# What a spider's callback may read besides HTML: an API's JSON, XML, plain text.
SPIDER_TYPES = HTML_TYPES | {"application/json", "text/json", "application/xml", "text/xml",
                             "text/plain"}  # fmt: skip
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
    types: frozenset[str] = HTML_TYPES,
    capture: bool = False,
    retry_statuses: frozenset[int] = frozenset(),
) -> FetchResult:
    """The result of attempt number `attempt` of `request`, timed from `started` (a
    perf_counter reading); raises Retryable for a 429 or a 5xx, and for `retry_statuses`
    (fetch.blocked_status with fetch.sessions: the next attempt is a new session's). `types`:
    the media types whose bodies are read for the parser (a spider's crawl adds JSON, XML and
    plain text); `capture`: with its Exchange."""
    wire = _Wire(response, fetched_at) if capture else None
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
        "headers": tuple(response.headers.items()),
    }

    def result(**fields: Any) -> FetchResult:
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        return FetchResult(**common, elapsed_ms=elapsed, **fields)

    status = response.status
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        exchange = await wire.unparsed(response, max_bytes) if wire else None
        failed = result(error_kind=ErrorKind.HTTP, error=_http_error(response), exchange=exchange)
        raise Retryable(failed, retry_after)
    if status in retry_statuses:
        exchange = await wire.unparsed(response, max_bytes) if wire else None
        failed = result(error_kind=ErrorKind.HTTP, error=_http_error(response), exchange=exchange)
        raise Retryable(failed)
    if status >= 300:  # an error, a redirect (its target is the next hop), or 304 Not Modified
        exchange = await wire.unparsed(response, max_bytes) if wire else None
        if status >= 400:
            return result(error_kind=ErrorKind.HTTP, error=_http_error(response), exchange=exchange)
        location = response.headers.get("Location")
        target = canonicalize(location, request.url) if location else None
        common["final_url"] = target if status != 304 else common["final_url"]
        return result(exchange=exchange)
    if mime is not None and mime not in types and not any_type:
        # Recorded, not downloaded nor parsed (nor archived: its record says so).
        exchange = wire.made(b"", truncated="unspecified") if wire else None
        return result(bytes=response.content_length, exchange=exchange)
    limit = body_limit or max_bytes
    decoder = BodyDecoder(response.headers.get("Content-Encoding"), limit)
    declared = response.content_length  # of the body as sent: before decompression
    if declared is not None and declared > limit and decoder.passes and body_limit is None:
        exchange = wire.made(b"", truncated="length") if wire else None
        return result(
            bytes=declared,
            error_kind=ErrorKind.TOO_LARGE,
            error=_too_large(limit),
            exchange=exchange,
        )
    if declared is not None and declared <= limit and decoder.passes:
        whole = await response.read()  # one await: its size is declared, within the limit
        return result(bytes=len(whole), body=whole, exchange=wire.made(whole) if wire else None)
    try:
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            decoder.feed(chunk)
            if decoder.over:
                cut = wire.made(bytes(decoder.raw), truncated="length") if wire else None
                if body_limit is not None:  # the first body_limit bytes are what is wanted
                    return result(bytes=limit, body=bytes(decoder.decoded[:limit]), exchange=cut)
                size = len(decoder.decoded)
                too_large = _too_large(limit)
                return result(
                    bytes=size, error_kind=ErrorKind.TOO_LARGE, error=too_large, exchange=cut
                )
        decoder.finish()
    except DecodingError as exc:  # what aiohttp raised when it decoded: a payload error
        raise aiohttp.ClientPayloadError(str(exc)) from exc
    body = bytes(decoder.decoded)
    raw = body if decoder.decoded is decoder.raw else bytes(decoder.raw)
    return result(bytes=len(body), body=body, exchange=wire.made(raw) if wire else None)


class _Wire:
    """What a response's Exchange needs of it, taken as it arrives (the connection, and so the
    address connected to, is gone once its body is read)."""

    def __init__(self, response: aiohttp.ClientResponse, date: str) -> None:
        self._url = str(response.request_info.url)
        self._date = date
        self._ip = _peer_address(response)
        self._request_head = _request_head(response.request_info)
        self._response_head = _response_head(response)

    def made(self, body: bytes, truncated: str | None = None) -> Exchange:
        return Exchange(
            url=self._url,
            date=self._date,
            ip=self._ip,
            request_head=self._request_head,
            response_head=self._response_head,
            body=body,
            truncated=truncated,
        )

    async def unparsed(self, response: aiohttp.ClientResponse, limit: int) -> Exchange:
        """The Exchange of a response whose body is not for the parser (an error, a redirect):
        its body read as it comes, up to `limit` bytes."""
        body = bytearray()
        try:
            async for chunk in response.content.iter_chunked(READ_CHUNK):
                body += chunk
                if len(body) > limit:
                    return self.made(bytes(body[:limit]), truncated="length")
        except (TimeoutError, aiohttp.ClientError, OSError):
            return self.made(bytes(body), truncated="disconnect")
        return self.made(bytes(body))


class PeerResponse(aiohttp.ClientResponse):
    """aiohttp's response, with the address it came from (`peer`): taken as it starts, while
    it holds its connection (a body that came with the headers gives the connection back at
    once, and a `Connection: close` one closes it). The session's `response_class`."""

    peer: str | None = None

    async def start(self, connection: Connection) -> Self:
        transport = connection.transport
        address = transport.get_extra_info("peername") if transport is not None else None
        self.peer = str(address[0]) if address else None
        await super().start(connection)
        return self


def _peer_address(response: aiohttp.ClientResponse) -> str | None:
    return response.peer if isinstance(response, PeerResponse) else None


def _request_head(info: aiohttp.RequestInfo) -> bytes:
    """The request line and headers as aiohttp sent them (its defaults, Host, our own)."""
    target = info.url.raw_path_qs or "/"
    lines = [f"{info.method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in info.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def _response_head(response: aiohttp.ClientResponse) -> bytes:
    """The status line and the headers, as they came (each header's bytes as received)."""
    version = response.version
    major, minor = (version.major, version.minor) if version is not None else (1, 1)
    status = f"HTTP/{major}.{minor} {response.status} {response.reason or ''}".rstrip()
    lines = [status.encode("latin-1", "replace")]
    lines += [name + b": " + value for name, value in response.raw_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _http_error(response: aiohttp.ClientResponse) -> str:
    return f"HTTP {response.status} {web_text(response.reason or '')}".strip()


def _too_large(limit: int) -> str:
    return f"body larger than fetch.max_bytes ({limit} bytes); abandoned"
