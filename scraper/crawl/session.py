"""The aiohttp session every request of a crawl goes through, and what each request carries.

One session, one connection pool: at most as many connections in use as there are connection
slots (`wire.py`); idle ones stay open only where the dispatcher says so (`Connection: close`
otherwise). Names go through the crawl's resolver (`dns.py`, cached there; aiohttp's own cache
is off), and with fetch.block_private the address guard (`addresses.py`) both vets the names'
addresses and makes the sockets. aiohttp follows no redirect by itself, and decompresses no
body: `response.py` does (`decoding.py`), so the archive (storage.warc) gets bodies as they came.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDict

from scraper.config import FetchConfig
from scraper.crawl.identity import RequestIdentity
from scraper.crawl.response import PeerResponse
from scraper.models import CrawlRequest

KEEPALIVE_TIMEOUT = 15.0  # aiohttp's default: an idle connection is closed after this


def make_session(
    config: FetchConfig, limit: int, resolver: AbstractResolver, socket_factory: Any = None
) -> aiohttp.ClientSession:
    """The crawl's session: fetch.*_timeout, fetch.user_agent, and `make_connector`'s pool."""
    return aiohttp.ClientSession(
        connector=make_connector(limit, resolver, socket_factory),
        timeout=aiohttp.ClientTimeout(
            total=config.total_timeout,
            connect=config.connect_timeout,
            sock_read=config.read_timeout,
        ),
        headers={"User-Agent": config.user_agent},
        auto_decompress=False,
        response_class=PeerResponse,  # with the address connected to, for the archive
        # Cookies are kept per host, with the host's lease (`cookies.py`), not session-wide.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


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


def request_options(
    request: CrawlRequest,
    *,
    close: bool,
    time_limit: float | None,
    connect_timeout: float,
    identity: RequestIdentity | None = None,
) -> dict[str, Any]:
    """The keyword arguments of `session.request` for `request`, beyond its method and URL: its
    body (a spider's request's), no redirect followed (each hop is a request of its own, within
    the crawl's boundary), the `identity` the URL gets (headers, login: `identity.py`) under the
    request's own headers, the validators of a stored page (a conditional request),
    `Connection: close` where the connection is not to idle in the pool, and a `time_limit`
    shorter than fetch.total_timeout."""
    headers: CIMultiDict[str] = CIMultiDict(identity.headers if identity is not None else {})
    headers.update(_headers(request, close))  # (case-insensitive: the request's own win)
    options: dict[str, Any] = {"allow_redirects": False, "headers": headers or None}
    if identity is not None and identity.middlewares:
        options["middlewares"] = identity.middlewares
    if request.body is not None:
        options["data"] = request.body
    if time_limit is not None:  # (passing timeout=None would mean no timeout at all)
        options["timeout"] = aiohttp.ClientTimeout(total=time_limit, connect=connect_timeout)
    return options


def _headers(request: CrawlRequest, close: bool) -> dict[str, str]:
    """A spider's request's own headers (`scraper.Request(headers=...)`), then ours."""
    headers: dict[str, str] = json.loads(request.headers) if request.headers else {}
    if close:
        headers["Connection"] = "close"
    if request.etag:
        headers["If-None-Match"] = request.etag
    if request.last_modified:
        headers["If-Modified-Since"] = request.last_modified
    return headers
