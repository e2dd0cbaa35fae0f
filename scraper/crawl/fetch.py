"""The fetch stage: CrawlRequest → FetchResult over one shared aiohttp session.

Every outcome is data: a dead host, a timeout or a 404 comes back as a FetchResult with its error,
never as an exception. Connection errors, timeouts, 429 and 5xx are retried with tenacity
(exponential backoff with jitter, Retry-After honoured); a connection slot is held only while a
request is on the wire, so a request waiting out its backoff leaves its slot to others.

Every request the crawl makes comes through here, and so through its boundary: the crawl's scope
(`outside`, asked before each request and each redirect hop) and, where the connection is made,
the address guard (`addresses.py`, fetch.block_private). aiohttp follows no redirect by itself.

Sockets are the process's own resource, not the site's: running out of them ("Too many open
files") is never a page's error. The request waits and tries again, and the number of connection
slots drops to what the process could open, climbing back as connections succeed. Connections
and names are made by `make_connector` and `dns.make_resolver` (the address guard wraps the
latter), kept apart so that resolvers layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import errno
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self

import aiohttp
from aiohttp.abc import AbstractResolver
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
from scraper.crawl.dns import make_resolver
from scraper.models import REDIRECTS, CrawlRequest, ErrorKind, FetchResult
from scraper.store.base import utc_now
from scraper.terminal import visible
from scraper.urls import canonicalize

log = logging.getLogger(__name__)

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
READ_CHUNK = 64 * 1024
WEB_TEXT_LIMIT = 200  # characters of a reason phrase or a server's error message kept


def everywhere(url: str) -> str | None:
    """The boundary of a Fetcher given none: every URL may be requested."""
    return None


# The process is out of a resource of its own (file descriptors, ephemeral ports, buffers): the
# request waits and tries again; the site is not at fault.
OUT_OF_SOCKETS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL}
)
SOCKETS_PAUSE = (0.05, 2.0)  # seconds: first and longest wait before trying such a request again
SOCKETS_RECOVERY = 50  # connections that succeed in a row before one more slot is allowed back
KEEPALIVE_TIMEOUT = 15.0  # aiohttp's default: an idle connection is closed after this


class WireListener(Protocol):
    """Who is told when requests go on and off the wire, and decides which connections stay
    open (the dispatcher, `scheduler.py`; attached by the coordinator)."""

    def started(self, request: CrawlRequest, first: bool) -> None:
        """`first`: the request's first attempt (not a retry, nor a try again for sockets)."""
        ...

    def ended(self) -> None: ...

    def keep_alive(self, request: CrawlRequest) -> bool: ...

    def not_before(self, request: CrawlRequest) -> float:
        """Seconds before the request's host may see another request (for a retry)."""
        ...


class _Everyone:
    """No dispatcher attached: every connection may stay open (aiohttp's own behaviour)."""

    def started(self, request: CrawlRequest, first: bool) -> None:
        pass

    def ended(self) -> None:
        pass

    def keep_alive(self, request: CrawlRequest) -> bool:
        return True

    def not_before(self, request: CrawlRequest) -> float:
        return 0.0


class _OutOfSockets(Exception):
    """The process could not open a connection: a resource of ours ran out, not the site."""


class WireSlots:
    """A semaphore whose size can shrink and grow back: the connection slots. At most `limit`
    requests on the wire; `limit` drops when the process runs out of sockets."""

    def __init__(self, limit: int) -> None:
        self.configured = self.limit = limit
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._streak = 0

    async def acquire(self) -> None:
        while self.in_use >= self.limit or self._waiters:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # it was this one's turn: pass it on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self.in_use < self.limit:
                break
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_use
        for waiter in self._waiters:
            if free <= 0:
                break
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def shrink(self) -> int:
        """Out of sockets: no more than one fewer than are open now."""
        self.limit = max(1, min(self.limit, self.in_use - 1))
        self._streak = 0
        return self.limit

    def connected(self) -> None:
        """A connection was made: after enough in a row, one more slot comes back."""
        if self.limit >= self.configured:
            return
        self._streak += 1
        if self._streak >= SOCKETS_RECOVERY:
            self._streak = 0
            self.limit += 1
            self._wake()


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
    (fetch.block_private). `concurrency`: connection slots, if fewer than fetch.concurrency
    (what the process's open-files limit allows, `sockets.socket_budget`); `resolver`: instead
    of the one `fetch.resolve` and the system give (the guard still wraps it)."""

    def __init__(
        self,
        config: FetchConfig,
        *,
        outside: Callable[[str], str | None] = everywhere,
        trusted_hosts: Iterable[str] = (),
        resolver: AbstractResolver | None = None,
        concurrency: int | None = None,
    ) -> None:
        self._config = config
        self._outside = outside
        self._guard = AddressGuard(block=config.block_private, trusted_hosts=trusted_hosts)
        self._wire = WireSlots(concurrency or config.concurrency)
        self._backoff = wait_exponential(
            multiplier=config.retry_backoff, max=config.retry_backoff_max
        ) + wait_random(0, config.retry_backoff)
        self._session: aiohttp.ClientSession | None = None
        self._connector_resolver: AbstractResolver | None = None
        self._listener: WireListener = _Everyone()
        self.resolver = resolver  # names, cached (what the dispatcher asks for IP keys)
        self.in_flight = 0

    @property
    def wire_limit(self) -> int:
        """Requests that may be on the wire at once now."""
        return self._wire.limit

    def attach(self, listener: WireListener) -> None:
        self._listener = listener

    async def __aenter__(self) -> Self:
        config = self._config
        if self.resolver is None:
            self.resolver = make_resolver(dict(config.resolve), config.dns_ttl)
        resolver, socket_factory = self.resolver, None
        if self._guard.block:
            resolver = GuardedResolver(self.resolver, self._guard)
            socket_factory = self._guard.socket_factory
        self._connector_resolver = resolver
        connector = make_connector(self._wire.configured, resolver, socket_factory)
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
        if self._connector_resolver is not None:  # passed to the connector, not its to close
            await self._connector_resolver.close()
            self._connector_resolver = None

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
                    result,
                    error_kind=ErrorKind.REDIRECTS,
                    error=f"{why} (fetch.max_redirects = {limit})",
                )
            hops += 1
            seen.add(target)
            hop = await self._fetch_one(CrawlRequest(url=target), True, time_limit, body_limit)
            if hop.error_kind == ErrorKind.OUT_OF_SCOPE:
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
                error_kind=ErrorKind.OUT_OF_SCOPE,
                error=f"outside the crawl's scope: {why}",
            )
        try:  # the first attempt without tenacity's set-up, which costs ~5% of the loop
            return await self._attempt(request, 1, any_type, time_limit, body_limit)
        except _Retryable as exc:
            first = exc
        throttles: list[float] = []  # Retry-After of each 429/503 (0 when absent)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self._config.retries),
            wait=lambda state: self._wait(state, request),
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

    def _wait(self, state: RetryCallState, request: CrawlRequest) -> float:
        """The pause before a retry: Retry-After, or the backoff; and never before the host's
        politeness allows another request (its delay since the attempt started)."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            pause = min(exc.retry_after, self._config.max_retry_after)
        else:
            pause = self._backoff(state)
        return max(pause, self._listener.not_before(request))

    async def _attempt(
        self,
        request: CrawlRequest,
        attempt: int,
        any_type: bool,
        time_limit: float | None,
        body_limit: int | None,
    ) -> FetchResult:
        """One attempt; while the process is out of sockets, the same attempt again (after a
        pause that grows), never a failure of the site's."""
        pause, longest = SOCKETS_PAUSE
        first = attempt == 1
        while True:
            try:
                return await self._attempt_once(
                    request, attempt, any_type, time_limit, body_limit, first
                )
            except _OutOfSockets as exc:
                first = False
                limit = self._wire.shrink()
                log.warning(
                    "out of sockets (%s): %d requests on the wire; at most %d for now, and %s "
                    "waits %.2f s",
                    exc,
                    self.in_flight,
                    limit,
                    request.url,
                    pause,
                )
                await asyncio.sleep(pause)
                pause = min(2 * pause, longest)

    async def _attempt_once(
        self,
        request: CrawlRequest,
        attempt: int,
        any_type: bool,
        time_limit: float | None,
        body_limit: int | None,
        first: bool,
    ) -> FetchResult:
        assert self._session is not None, "Fetcher used outside `async with`"

        def failure(kind: ErrorKind, message: str, **extra: object) -> FetchResult:
            return FetchResult(
                request=request,
                fetched_at=fetched_at,
                attempts=attempt,
                elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
                error_kind=kind,
                error=message,
                **extra,  # type: ignore[arg-type]
            )

        await self._wire.acquire()
        try:
            # Timed from here: latency on the wire, not the wait for a slot.
            started = time.perf_counter()
            fetched_at = utc_now()
            self.in_flight += 1
            self._listener.started(request, first)
            try:
                options: dict[str, Any] = {}
                if time_limit is not None:  # (passing timeout=None would mean no timeout at all)
                    options["timeout"] = aiohttp.ClientTimeout(
                        total=time_limit, connect=self._config.connect_timeout
                    )
                # A host with nothing more queued, or over the budget of idle connections: the
                # connection closes after this response instead of idling in the pool (aiohttp
                # keeps it 15 s), so open sockets stay bounded whatever the number of hosts.
                close = not self._listener.keep_alive(request)
                async with self._session.get(
                    request.url,
                    allow_redirects=False,  # each hop is a request of its own, in the boundary
                    headers=_headers(request, close),
                    **options,
                ) as response:
                    self._wire.connected()
                    return await self._read(
                        response, request, attempt, fetched_at, started, any_type, body_limit
                    )
            except TimeoutError:
                raise _Retryable(failure(ErrorKind.TIMEOUT, "timed out")) from None
            except aiohttp.InvalidURL as exc:
                return failure(ErrorKind.INVALID_URL, f"invalid URL: {web_text(str(exc))}")
            except aiohttp.ClientResponseError as exc:  # malformed response, not an HTTP status
                message = f"bad response: {web_text(exc.message)}"
                raise _Retryable(failure(ErrorKind.PROTOCOL, message)) from None
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, AddressBlocked):  # refused before a packet was sent
                    return dataclasses.replace(
                        failure(ErrorKind.BLOCKED, f"refused: {exc.os_error}"), attempts=0
                    )
                if _out_of_sockets(exc):
                    raise _OutOfSockets(_describe(exc)) from exc
                if isinstance(exc, aiohttp.ClientConnectorDNSError):
                    found = failure(
                        ErrorKind.DNS, f"cannot resolve {exc.host}: {_reason(exc.os_error)}"
                    )
                    if exc.os_error.errno == socket.EAI_AGAIN:  # the resolver's failure, for now
                        raise _Retryable(found) from None
                    return found  # the name does not exist: asking again will not help
                raise _Retryable(failure(ErrorKind.CONNECTION, _describe(exc))) from None
            except (aiohttp.ClientError, OSError) as exc:
                if _out_of_sockets(exc):
                    raise _OutOfSockets(_describe(exc)) from exc
                raise _Retryable(failure(ErrorKind.CONNECTION, _describe(exc))) from None
            finally:
                self.in_flight -= 1
        finally:
            self._wire.release()
            self._listener.ended()

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
            raise _Retryable(
                result(error_kind=ErrorKind.HTTP, error=_http_error(response)), retry_after
            )
        if status >= 400:
            return result(error_kind=ErrorKind.HTTP, error=_http_error(response))
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
                return result(
                    bytes=len(body), error_kind=ErrorKind.TOO_LARGE, error=_too_large(limit)
                )
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


def make_connector(
    limit: int, resolver: AbstractResolver, socket_factory: Any = None
) -> aiohttp.TCPConnector:
    """The connection pool: at most `limit` connections in use (fetch.concurrency, or what the
    open-files limit allows); idle ones are the dispatcher's to keep or close (`keep_alive`).
    Names go through `resolver`, which caches them (aiohttp's own cache is off); a
    `socket_factory` (the address guard's) makes the sockets."""
    extra: dict[str, Any] = {"socket_factory": socket_factory} if socket_factory else {}
    return aiohttp.TCPConnector(
        limit=limit,
        limit_per_host=0,
        resolver=resolver,
        use_dns_cache=False,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        **extra,
    )


def _out_of_sockets(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        # getaddrinfo's "system error": in a crawl, a thread that could not open a socket
        return exc.os_error.errno == socket.EAI_SYSTEM
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    return isinstance(cause, OSError) and cause.errno in OUT_OF_SOCKETS


def _reason(error: OSError) -> str:
    return web_text(error.strerror or str(error) or type(error).__name__)


def _headers(request: CrawlRequest, close: bool) -> dict[str, str] | None:
    headers = {}
    if close:
        headers["Connection"] = "close"
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
