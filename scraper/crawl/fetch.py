"""The fetch stage: CrawlRequest → FetchResult over one shared aiohttp session.

Every outcome is data: a dead host, a timeout or a 404 comes back as a FetchResult with its error,
never as an exception. Connection errors, timeouts, 429 and 5xx are retried with tenacity
(exponential backoff with jitter, Retry-After honoured); the semaphore is held only while a request
is on the wire, so a request waiting out its backoff leaves its slot to others.

Every request the crawl makes comes through here, and so through its boundary: the crawl's scope
(`outside`, asked before each request and each redirect hop) and, where the connection is made,
the address guard (`addresses.py`, fetch.block_private). aiohttp follows no redirect by itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from scraper.config import FetchConfig
from scraper.crawl.addresses import AddressBlocked, AddressGuard, GuardedResolver
from scraper.models import CrawlRequest, FetchResult
from scraper.store.base import utc_now
from scraper.terminal import visible
from scraper.urls import canonicalize

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
READ_CHUNK = 64 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
WEB_TEXT_LIMIT = 200  # characters of a reason phrase or a server's error message kept


def everywhere(url: str) -> str | None:
    """The boundary of a Fetcher given none: every URL may be requested."""
    return None


class _Retryable(Exception):
    """An attempt failed in a way worth trying again; carries what to store if none succeeds."""

    def __init__(self, result: FetchResult, retry_after: float | None = None) -> None:
        super().__init__(result.error)
        self.result = result
        self.retry_after = retry_after


class Fetcher:
    """Owns the aiohttp session and the global concurrency cap.

    `outside` is the crawl's boundary (`Scope.outside`): why no request may go to a URL, None
    when one may. `trusted_hosts` are the seeds' hosts, whatever addresses they are on
    (fetch.block_private)."""

    def __init__(
        self,
        config: FetchConfig,
        *,
        outside: Callable[[str], str | None] = everywhere,
        trusted_hosts: Iterable[str] = (),
    ) -> None:
        self._config = config
        self._outside = outside
        self._guard = AddressGuard(block=config.block_private, trusted_hosts=trusted_hosts)
        self._slots = asyncio.BoundedSemaphore(config.concurrency)
        self._backoff = wait_exponential(
            multiplier=config.retry_backoff, max=config.retry_backoff_max
        ) + wait_random(0, config.retry_backoff)
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self.in_flight = 0

    async def __aenter__(self) -> Self:
        config = self._config
        guarded: dict[str, Any] = {}
        if self._guard.block:
            self._resolver = GuardedResolver(aiohttp.DefaultResolver(), self._guard)
            guarded = {"resolver": self._resolver, "socket_factory": self._guard.socket_factory}
        connector = aiohttp.TCPConnector(limit=config.concurrency, limit_per_host=0, **guarded)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=config.total_timeout,
                connect=config.connect_timeout,
                sock_read=config.read_timeout,
            ),
            headers={"User-Agent": config.user_agent},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:  # passed to the connector, so not its to close
            await self._resolver.close()
            self._resolver = None

    async def fetch(
        self,
        request: CrawlRequest,
        *,
        any_type: bool = False,
        time_limit: float | None = None,
        body_limit: int | None = None,
    ) -> FetchResult:
        """Fetch with retries, if the boundary allows the URL. A redirect is not followed: it
        comes back with its target in `final_url`, for the crawl to treat as a URL of its own.
        `any_type` (robots.txt, sitemaps): read the body whatever its type, and follow redirects
        here, each hop within the boundary, up to fetch.max_redirects; `time_limit`: a shorter
        total timeout than fetch.total_timeout; `body_limit`: read at most this many bytes and
        keep them (robots.txt), where a body over fetch.max_bytes is abandoned."""
        result = await self._fetch_one(request, any_type, time_limit, body_limit)
        if not any_type:
            return result
        hops = 0
        seen = {request.url}
        while result.status in REDIRECTS and result.final_url and result.error_kind is None:
            target = result.final_url
            if target in seen or hops >= self._config.max_redirects:
                why = "a redirect loop" if target in seen else "too many redirects"
                limit = self._config.max_redirects
                return dataclasses.replace(
                    result, error_kind="redirects", error=f"{why} (fetch.max_redirects = {limit})"
                )
            hops += 1
            seen.add(target)
            hop = await self._fetch_one(CrawlRequest(url=target), True, time_limit, body_limit)
            if hop.error_kind == "out_of_scope":
                hop = dataclasses.replace(hop, error=f"redirected to {target}: {hop.error}")
            result = dataclasses.replace(hop, request=request, final_url=target)
        return result

    async def _fetch_one(
        self,
        request: CrawlRequest,
        any_type: bool,
        time_limit: float | None,
        body_limit: int | None,
    ) -> FetchResult:
        why = self._outside(request.url)
        if why is not None:
            return FetchResult(
                request=request,
                fetched_at=utc_now(),
                attempts=0,
                error_kind="out_of_scope",
                error=f"outside the crawl's scope: {why}",
            )
        try:  # the first attempt without tenacity's set-up, which costs ~5% of the loop
            return await self._attempt(request, 1, any_type, time_limit, body_limit)
        except _Retryable as exc:
            first = exc
        throttles: list[float] = []  # Retry-After of each 429/503 (0 when absent)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self._config.retries),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        number = attempt.retry_state.attempt_number
                        if number == 1:
                            raise first  # already made: tenacity waits, then tries again
                        result = await self._attempt(
                            request, number, any_type, time_limit, body_limit
                        )
                    except _Retryable as exc:
                        if exc.result.status in (429, 503):
                            throttles.append(exc.retry_after or 0.0)
                        raise
                    return _with_throttles(result, throttles)
        except _Retryable as exc:
            return _with_throttles(exc.result, throttles)
        raise AssertionError("tenacity ended without a result")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self._config.max_retry_after)
        return self._backoff(state)

    async def _attempt(
        self,
        request: CrawlRequest,
        attempt: int,
        any_type: bool,
        time_limit: float | None,
        body_limit: int | None,
    ) -> FetchResult:
        assert self._session is not None, "Fetcher used outside `async with`"

        def failure(kind: str, message: str, **extra: object) -> FetchResult:
            return FetchResult(
                request=request,
                fetched_at=fetched_at,
                attempts=attempt,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
                error_kind=kind,
                error=message,
                **extra,  # type: ignore[arg-type]
            )

        async with self._slots:
            # Timed from here: latency on the wire, not the wait for a slot.
            started = time.perf_counter()
            fetched_at = utc_now()
            self.in_flight += 1
            try:
                options: dict[str, Any] = {}
                if time_limit is not None:  # (passing timeout=None would mean no timeout at all)
                    options["timeout"] = aiohttp.ClientTimeout(
                        total=time_limit, connect=self._config.connect_timeout
                    )
                async with self._session.get(
                    request.url,
                    allow_redirects=False,  # each hop is a request of its own, in the boundary
                    headers=_conditional_headers(request),
                    **options,
                ) as response:
                    return await self._read(
                        response, request, attempt, fetched_at, started, any_type, body_limit
                    )
            except TimeoutError:
                raise _Retryable(failure("timeout", "timed out")) from None
            except aiohttp.InvalidURL as exc:
                return failure("invalid_url", f"invalid URL: {web_text(str(exc))}")
            except aiohttp.ClientResponseError as exc:  # malformed response, not an HTTP status
                message = f"bad response: {web_text(exc.message)}"
                raise _Retryable(failure("protocol", message)) from None
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, AddressBlocked):  # refused before a packet was sent
                    return dataclasses.replace(
                        failure("blocked", f"refused: {exc.os_error}"), attempts=0
                    )
                raise _Retryable(failure("connection", _describe(exc))) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise _Retryable(failure("connection", _describe(exc))) from None
            finally:
                self.in_flight -= 1

    async def _read(
        self,
        response: aiohttp.ClientResponse,
        request: CrawlRequest,
        attempt: int,
        fetched_at: str,
        started: float,
        any_type: bool = False,
        body_limit: int | None = None,
    ) -> FetchResult:
        content_type = response.headers.get("Content-Type")
        mime = content_type.split(";", 1)[0].strip().lower() if content_type else None
        common = {
            "request": request,
            "fetched_at": fetched_at,
            "attempts": attempt,
            "status": response.status,
            "final_url": str(response.url),
            "content_type": content_type,
            "etag": response.headers.get("ETag"),
            "last_modified": response.headers.get("Last-Modified"),
        }

        def result(**fields: object) -> FetchResult:
            elapsed = round((time.perf_counter() - started) * 1000, 1)
            return FetchResult(**common, elapsed_ms=elapsed, **fields)  # type: ignore[arg-type]

        status = response.status
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise _Retryable(result(error_kind="http", error=_http_error(response)), retry_after)
        if status >= 400:
            return result(error_kind="http", error=_http_error(response))
        if status >= 300:  # a redirect (its target is the next hop), or 304 Not Modified
            location = response.headers.get("Location")
            target = canonicalize(location, request.url) if location else None
            common["final_url"] = target if status != 304 else common["final_url"]
            return result()
        if mime is not None and mime not in HTML_TYPES and not any_type:
            return result(bytes=response.content_length)  # recorded, not downloaded nor parsed
        limit = body_limit or self._config.max_bytes
        declared = response.content_length
        plain = "Content-Encoding" not in response.headers
        if declared is not None and declared > limit and plain and body_limit is None:
            return result(bytes=declared, error_kind="too_large", error=_too_large(limit))
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
                return result(bytes=len(body), error_kind="too_large", error=_too_large(limit))
        return result(bytes=len(body), body=bytes(body))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _conditional_headers(request: CrawlRequest) -> dict[str, str] | None:
    headers = {}
    if request.etag:
        headers["If-None-Match"] = request.etag
    if request.last_modified:
        headers["If-Modified-Since"] = request.last_modified
    return headers or None


def _with_throttles(result: FetchResult, throttles: list[float]) -> FetchResult:
    if not throttles:
        return result
    return dataclasses.replace(result, throttled=True, retry_after=max(throttles) or None)


def web_text(text: str) -> str:
    """Text a server chose (a reason phrase, a header in an error), fit for a stored error
    message that may reach a terminal: control characters shown as escapes, and shortened."""
    text = visible(text)
    return text if len(text) <= WEB_TEXT_LIMIT else text[:WEB_TEXT_LIMIT] + "…"


def _http_error(response: aiohttp.ClientResponse) -> str:
    return f"HTTP {response.status} {web_text(response.reason or '')}".strip()


def _too_large(limit: int) -> str:
    return f"body larger than fetch.max_bytes ({limit} bytes); abandoned"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = exc.os_error.strerror or str(exc.os_error)
        return f"cannot connect to {exc.host}:{exc.port}: {web_text(why)}"
    text = str(exc) or type(exc).__name__
    return web_text(text.splitlines()[0])
