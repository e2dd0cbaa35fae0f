"""The fetch stage: CrawlRequest → FetchResult over one shared aiohttp session.

Every outcome is data: a dead host, a timeout or a 404 comes back as a FetchResult with its error,
never as an exception. Connection errors, timeouts, 429 and 5xx are retried with tenacity
(exponential backoff with jitter, Retry-After honoured); the semaphore is held only while a request
is on the wire, so a request waiting out its backoff leaves its slot to others.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import time
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
from scraper.models import CrawlRequest, FetchResult
from scraper.store.base import utc_now
from scraper.urls import canonicalize

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
READ_CHUNK = 64 * 1024


class _Retryable(Exception):
    """An attempt failed in a way worth trying again; carries what to store if none succeeds."""

    def __init__(self, result: FetchResult, retry_after: float | None = None) -> None:
        super().__init__(result.error)
        self.result = result
        self.retry_after = retry_after


class Fetcher:
    """Owns the aiohttp session and the global concurrency cap."""

    def __init__(self, config: FetchConfig) -> None:
        self._config = config
        self._slots = asyncio.BoundedSemaphore(config.concurrency)
        self._backoff = wait_exponential(
            multiplier=config.retry_backoff, max=config.retry_backoff_max
        ) + wait_random(0, config.retry_backoff)
        self._session: aiohttp.ClientSession | None = None
        self.in_flight = 0

    async def __aenter__(self) -> Self:
        config = self._config
        connector = aiohttp.TCPConnector(limit=config.concurrency, limit_per_host=0)
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

    async def fetch(
        self, request: CrawlRequest, *, any_type: bool = False, time_limit: float | None = None
    ) -> FetchResult:
        """Fetch with retries. A redirect is not followed: it comes back with its target in
        `final_url`, for the crawl to treat as a URL of its own. `any_type` (robots.txt,
        sitemaps): read the body whatever its type, and follow redirects here;
        `time_limit`: a shorter total timeout than fetch.total_timeout."""
        try:  # the first attempt without tenacity's set-up, which costs ~5% of the loop
            return await self._attempt(request, 1, any_type, time_limit)
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
                        result = await self._attempt(request, number, any_type, time_limit)
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
        self, request: CrawlRequest, attempt: int, any_type: bool, time_limit: float | None
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
                    allow_redirects=any_type,
                    max_redirects=self._config.max_redirects + 1,  # aiohttp counts the first
                    headers=_conditional_headers(request),
                    **options,
                ) as response:
                    return await self._read(
                        response, request, attempt, fetched_at, started, any_type
                    )
            except aiohttp.TooManyRedirects:
                return failure("redirects", f"more than {self._config.max_redirects} redirects")
            except TimeoutError:
                raise _Retryable(failure("timeout", "timed out")) from None
            except aiohttp.InvalidURL as exc:
                return failure("invalid_url", f"invalid URL: {exc}")
            except aiohttp.ClientResponseError as exc:  # malformed response, not an HTTP status
                raise _Retryable(failure("protocol", f"bad response: {exc.message}")) from None
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
            failed = result(
                error_kind="http", error=f"HTTP {status} {response.reason or ''}".strip()
            )
            raise _Retryable(failed, retry_after)
        if status >= 400:
            return result(error_kind="http", error=f"HTTP {status} {response.reason or ''}".strip())
        if status >= 300:  # a redirect (its target is the next hop), or 304 Not Modified
            location = response.headers.get("Location")
            target = canonicalize(location, request.url) if location else None
            common["final_url"] = target if status != 304 else common["final_url"]
            return result()
        if mime is not None and mime not in HTML_TYPES and not any_type:
            return result(bytes=response.content_length)  # recorded, not downloaded nor parsed
        limit = self._config.max_bytes
        declared = response.content_length
        if declared is not None and declared > limit and "Content-Encoding" not in response.headers:
            return result(bytes=declared, error_kind="too_large", error=_too_large(limit))
        if declared is not None and "Content-Encoding" not in response.headers:
            whole = await response.read()  # one await: its size is declared, within the limit
            return result(bytes=len(whole), body=whole)
        body = bytearray()
        # Counted after decompression: aiohttp's stream yields decoded bytes.
        async for chunk in response.content.iter_chunked(READ_CHUNK):
            body += chunk
            if len(body) > limit:
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


def _too_large(limit: int) -> str:
    return f"body larger than fetch.max_bytes ({limit} bytes); abandoned"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
