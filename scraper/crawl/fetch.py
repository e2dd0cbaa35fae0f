"""The fetch stage: CrawlRequest → FetchResult over one shared aiohttp session.

Every outcome is data: a dead host, a timeout or a 404 comes back as a FetchResult with its error,
never as an exception. A request goes through, in order:

- the crawl's boundary (`outside`, asked before each request and each redirect hop) and, where
  the connection is made, the address guard (`addresses.py`, fetch.block_private);
- its retries (`retries.py`): connection errors, timeouts, 429 and 5xx, with backoff or the
  server's Retry-After;
- each attempt's connection slot (`wire.py`), held only while the request is on the wire, and
  made again while the process is out of sockets (`out_of_sockets.py`), never a page's error;
- the session (`session.py`), then the response read within its limits (`response.py`), or
  aiohttp's error mapped to ours (`failures.py`);
- for robots.txt and sitemaps (`any_type`), their redirects followed (`redirects.py`);
- with an archive (storage.warc), each response's Exchange captured (`response.py`): robots.txt's
  and sitemaps' written here, hop by hop; a page's carried in its result to the pipeline, which
  writes it with its batch. A stored page with no archived response is asked for whole (no
  validators), so that a 304 always has a response record to refer to.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp.abc import AbstractResolver

from scraper.config import FetchConfig
from scraper.crawl.addresses import AddressGuard, GuardedResolver
from scraper.crawl.dns import make_resolver
from scraper.crawl.failures import describe, failure_of
from scraper.crawl.identity import Identities
from scraper.crawl.out_of_sockets import OutOfSockets, out_of_sockets, until_sockets
from scraper.crawl.ports import Archiver, WireListener
from scraper.crawl.redirects import follow_redirects
from scraper.crawl.response import HTML_TYPES, read_response
from scraper.crawl.retries import Retryable, RetryPolicy, with_retries
from scraper.crawl.session import make_session, request_options
from scraper.crawl.wire import Everyone, WireSlots
from scraper.models import CrawlRequest, ErrorKind, FetchResult
from scraper.store.base import utc_now


def everywhere(url: str) -> str | None:
    """The boundary of a Fetcher given none: every URL may be requested."""
    return None


class Fetcher:
    """Owns the aiohttp session and the connection slots.

    `outside` is the crawl's boundary (`Scope.outside`): why no request may go to a URL, None
    when one may. `trusted_hosts` are the seeds' hosts, whatever addresses they are on
    (fetch.block_private). `wire`: the connection slots, if not fetch.concurrency of them (what
    the process's open-files limit allows, `sockets.socket_budget`), shared with `listener`,
    who is told as requests go on and off them (the dispatcher's `OnTheWire`; none: every
    connection may stay open); `resolver`: instead of the one `fetch.resolve` and the system give
    (the guard still wraps it); `identities`: the headers and logins each URL gets
    (`identity.py`; none: fetch.user_agent alone)."""

    def __init__(
        self,
        config: FetchConfig,
        *,
        outside: Callable[[str], str | None] = everywhere,
        trusted_hosts: Iterable[str] = (),
        resolver: AbstractResolver | None = None,
        wire: WireSlots | None = None,
        listener: WireListener | None = None,
        types: frozenset[str] = HTML_TYPES,
        archive: Archiver | None = None,
        identities: Identities | None = None,
    ) -> None:
        self._config = config
        self._outside = outside
        self._guard = AddressGuard(block=config.block_private, trusted_hosts=trusted_hosts)
        self._wire = wire or WireSlots(config.concurrency)
        self._retries = RetryPolicy.of(config)
        self._session: aiohttp.ClientSession | None = None
        self._connector_resolver: AbstractResolver | None = None
        self._listener = listener or Everyone()
        self._types = types  # the media types whose bodies are read for the parser
        self._archive = archive
        self.resolver = resolver  # names, cached (what the dispatcher asks for IP keys)
        self._identities = identities or Identities(config.user_agent)

    @property
    def in_flight(self) -> int:
        """Requests on the wire now."""
        return self._wire.in_use

    @property
    def wire_limit(self) -> int:
        """Requests that may be on the wire at once now."""
        return self._wire.limit

    async def __aenter__(self) -> Self:
        config = self._config
        if self.resolver is None:
            self.resolver = make_resolver(dict(config.resolve), config.dns_ttl)
        resolver, socket_factory = self.resolver, None
        if self._guard.block:
            resolver = GuardedResolver(self.resolver, self._guard)
            socket_factory = self._guard.socket_factory
        self._connector_resolver = resolver
        self._session = make_session(config, self._wire.configured, resolver, socket_factory)
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
        validated = request.etag is not None or request.last_modified is not None
        if validated and self._archive is not None and request.archived_date is None:
            request = dataclasses.replace(request, etag=None, last_modified=None)
        result = await self._fetch_one(request, any_type, time_limit, body_limit)
        if not any_type:
            return result
        hop = functools.partial(
            self._fetch_one, any_type=True, time_limit=time_limit, body_limit=body_limit
        )
        return await follow_redirects(result, hop, self._config.max_redirects)

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

        def attempt(number: int) -> Awaitable[FetchResult]:
            on_the_wire = functools.partial(
                self._on_the_wire, request, number, any_type, time_limit, body_limit
            )
            return until_sockets(on_the_wire, self._wire, first=number == 1, url=request.url)

        not_before = functools.partial(self._listener.not_before, request)
        result = await with_retries(attempt, self._retries, not_before=not_before)
        if any_type and self._archive is not None and result.exchange is not None:
            (where,) = await self._archive.write([result.exchange])  # robots.txt, a sitemap
            result = dataclasses.replace(result, archived=where, exchange=None)
        return result

    async def _on_the_wire(
        self,
        request: CrawlRequest,
        attempt: int,
        any_type: bool,
        time_limit: float | None,
        body_limit: int | None,
        first: bool,
    ) -> FetchResult:
        """Attempt number `attempt`, on a connection slot; raises Retryable for a failure worth
        another attempt, OutOfSockets when the process could not open a connection."""
        assert self._session is not None, "Fetcher used outside `async with`"
        config = self._config
        await self._wire.acquire()
        try:
            # Timed from here: latency on the wire, not the wait for a slot.
            started = time.perf_counter()
            fetched_at = utc_now()
            self._listener.started(request, first)
            # A host with nothing more queued, or over the budget of idle connections: the
            # connection closes after this response instead of idling in the pool (aiohttp
            # keeps it 15 s), so open sockets stay bounded whatever the number of hosts.
            close = not self._listener.keep_alive(request)
            options = request_options(
                request,
                close=close,
                time_limit=time_limit,
                connect_timeout=config.connect_timeout,
                identity=self._identities.for_url(request.url),
            )
            try:
                session = self._session
                async with session.request(request.verb, request.url, **options) as response:
                    self._wire.connected()
                    return await read_response(
                        response,
                        request,
                        attempt=attempt,
                        fetched_at=fetched_at,
                        started=started,
                        max_bytes=config.max_bytes,
                        any_type=any_type,
                        body_limit=body_limit,
                        types=self._types,
                        capture=self._archive is not None,
                        retry_statuses=self._identities.retry_statuses,
                    )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                if out_of_sockets(exc):
                    raise OutOfSockets(describe(exc)) from exc
                failure = failure_of(exc)
                result = FetchResult(
                    request=request,
                    fetched_at=fetched_at,
                    attempts=attempt if failure.sent else 0,
                    elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
                    error_kind=failure.kind,
                    error=failure.message,
                )
                if failure.retry:
                    raise Retryable(result) from None
                return result
        finally:
            self._wire.release()
            self._listener.ended()
