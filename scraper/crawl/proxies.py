"""Proxies: which one a request goes through, and what is done when one fails.

fetch.proxies (and fetch.proxies_file) list forward proxies, `http://` or `https://` (TLS to
the proxy), with their credentials in the URL if they want some. The credentials become a
`Proxy-Authorization` header aiohttp sends to the proxy only: on the request line of a plain
HTTP request through the proxy (which the proxy consumes), or on the `CONNECT` that opens a
tunnel to an HTTPS site, never inside the tunnel. The header is dropped before each attempt, so
a failing proxy's credentials never go to the next one.

Which proxy (fetch.proxy_strategy):

- `round_robin`: each request takes the next proxy in turn;
- `per_host`: a host keeps one proxy (chosen by a hash of its name), while it works;
- `sticky`: every request goes through the first proxy that works, until it fails.

A proxy that fails (refused, a timeout connecting, 407 or another answer to CONNECT) is benched
for fetch.proxy_bench seconds, and the request goes at once through the next one that is not,
within the same attempt; only when none is left does the attempt fail (`connection`, "no proxy
left"), to be retried as any connection error is. Counts per proxy go to the crawl's stats.

The target is judged by us, not the proxy: the scope is asked as for any request, and with
fetch.block_private its name is resolved here and refused if it is a private address (the
proxy resolves it again: a name that answers differently from one look-up to the next could
still reach one through it). The proxies' own addresses are trusted (they are configuration).
"""

from __future__ import annotations

import enum
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
from aiohttp.abc import AbstractResolver
from yarl import URL

from scraper.config import FetchConfig
from scraper.crawl.addresses import AddressGuard, GuardedResolver
from scraper.crawl.credentials import Credentials
from scraper.errors import ConfigError
from scraper.secrets import Secret


class ProxyStrategy(enum.StrEnum):
    ROUND_ROBIN = "round_robin"
    PER_HOST = "per_host"
    STICKY = "sticky"


@dataclass(frozen=True, slots=True)
class Proxy:
    """One forward proxy: its URL without credentials (`shown`), and its credentials."""

    url: URL
    authorization: Secret | None = field(default=None, repr=False)  # Proxy-Authorization

    @property
    def shown(self) -> str:
        """The proxy as logs, stats and errors name it: no user name, no password."""
        return str(self.url.origin())


def parse_proxy(text: str, where: str) -> Proxy:
    """A proxy's URL (`http://user:pass@host:port`) → a Proxy; ConfigError naming `where`,
    never the URL (it may hold a password)."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: not an http:// or https:// proxy URL (host and port)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ConfigError(f"{where}: the proxy's port is not a number") from exc
    authorization = None
    if parts.username is not None:
        user, password = unquote(parts.username), unquote(parts.password or "")
        authorization = Secret(aiohttp.encode_basic_auth(user, password))
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return Proxy(URL(f"{parts.scheme}://{host}:{port}"), authorization)


class NoProxyLeft(aiohttp.ClientConnectionError):
    """Every proxy is benched: the attempt fails as a connection error."""


# What says the proxy failed, not the site: it could not be reached (refused, a timeout while
# connecting), or it refused the tunnel (407, 403, 502 to CONNECT).
PROXY_FAILURES = (
    aiohttp.ClientProxyConnectionError,
    aiohttp.ClientHttpProxyError,
    aiohttp.ConnectionTimeoutError,
)


@dataclass
class ProxyCounts:
    requests: int = 0
    failures: int = 0
    benched: int = 0


class ProxyPool:
    """The crawl's proxies, with each one's bench (until when it is not to be used)."""

    def __init__(
        self,
        proxies: list[Proxy],
        strategy: ProxyStrategy,
        bench: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.proxies = proxies
        self._strategy = strategy
        self._bench = bench
        self._clock = clock
        self._until: dict[int, float] = {}  # proxy index → benched until
        self._next = 0  # round_robin: the next to take; sticky: the one in use
        self.counts = [ProxyCounts() for _ in proxies]
        self.reasons: Counter[str] = Counter()

    def choice(self, host: str, session: int = 0) -> Proxy | None:
        """The proxy a request to `host` would take first now (None: all benched), without
        taking a turn: for a fetch path of its own (a browser's), which does its own failover."""
        saved = self._next
        order = self.order(host, session)
        self._next = saved
        return self.proxies[order[0]] if order else None

    def order(self, host: str, session: int = 0) -> list[int]:
        """The proxies a request to `host` may try, first choice first; benched ones left out.
        `session`: the host's session number (`sessions.py`): each new one moves the host to
        the next proxy (per_host, sticky; round_robin moves with every request anyway)."""
        n = len(self.proxies)
        if self._strategy == ProxyStrategy.PER_HOST:
            start = (zlib.crc32(host.encode()) + session) % n
        elif self._strategy == ProxyStrategy.STICKY:
            start = (self._next + session) % n
        else:
            start = self._next
        now = self._clock()
        order = [i % n for i in range(start, start + n) if self._until.get(i % n, 0.0) <= now]
        if self._strategy == ProxyStrategy.ROUND_ROBIN and order:
            self._next = (order[0] + 1) % n  # the next request: the one after this one's
        return order

    def failed(self, index: int, why: str) -> None:
        self.counts[index].failures += 1
        self.counts[index].benched += 1
        self._until[index] = self._clock() + self._bench
        self.reasons[why] += 1
        if self._strategy == ProxyStrategy.STICKY and self._next == index:
            self._next = (index + 1) % len(self.proxies)

    def worked(self, index: int) -> None:
        self._until.pop(index, None)
        if self._strategy == ProxyStrategy.STICKY:
            self._next = index

    def middleware(self, host: str, vet: Vet | None, session: int = 0) -> ThroughProxies:
        return ThroughProxies(self, host, vet, session)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per proxy (as shown): requests sent through it, failures, times benched."""
        return {
            proxy.shown: {"requests": c.requests, "failures": c.failures, "benched": c.benched}
            for proxy, c in zip(self.proxies, self.counts, strict=True)
        }


def _to_proxy(request: ClientRequest, proxy: Proxy) -> dict[str, str] | None:
    """The proxy's credentials where only the proxy reads them: on the CONNECT of a tunnel (an
    HTTPS site: the headers aiohttp gives the CONNECT alone), or on a plain HTTP request sent
    to the proxy whole (which the proxy consumes and does not forward)."""
    if proxy.authorization is None:
        return None
    value = proxy.authorization.reveal()
    if request.is_ssl():
        return {hdrs.PROXY_AUTHORIZATION: value}
    request.headers[hdrs.PROXY_AUTHORIZATION] = value
    return None


Vet = Callable[[URL], Awaitable[None]]  # raises AddressBlocked for a target not to be reached


class ThroughProxies:
    """aiohttp client middleware: the request through the pool's proxies, in its order, until
    one works; the target vetted first (`vet`, fetch.block_private)."""

    __slots__ = ("_host", "_pool", "_session", "_vet")

    def __init__(self, pool: ProxyPool, host: str, vet: Vet | None, session: int = 0) -> None:
        self._pool = pool
        self._host = host
        self._vet = vet
        self._session = session

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        if self._vet is not None:
            await self._vet(request.url)
        pool = self._pool
        order = pool.order(self._host, self._session)
        for index in order:
            proxy = pool.proxies[index]
            request.headers.popall(hdrs.PROXY_AUTHORIZATION, None)  # never the last one's
            request.update_proxy(proxy.url, None, _to_proxy(request, proxy))
            pool.counts[index].requests += 1
            try:
                response = await handler(request)
            except PROXY_FAILURES as exc:
                pool.failed(index, type(exc).__name__)
                continue
            if response.status == 407 and not request.is_ssl():  # the proxy's own refusal
                response.release()
                pool.failed(index, "407")
                continue
            pool.worked(index)
            return response
        raise NoProxyLeft(f"no proxy left: all {len(pool.proxies)} failed or benched")


def proxy_pool(config: FetchConfig, credentials: Credentials) -> ProxyPool | None:
    """The crawl's proxies (fetch.proxies and fetch.proxies_file, read into `credentials`), or
    None when there are none."""
    if not credentials.proxies:
        return None
    proxies = [
        parse_proxy(url.reveal(), f"proxy {n}") for n, url in enumerate(credentials.proxies, 1)
    ]
    return ProxyPool(proxies, ProxyStrategy(config.proxy_strategy), config.proxy_bench)


def target_vetter(resolver: AbstractResolver, guard: AddressGuard) -> Vet:
    """fetch.block_private for a request through a proxy: the target's name resolved here, and
    refused (AddressBlocked) when none of its addresses is public, as the connector would."""
    guarded = GuardedResolver(resolver, guard)

    async def vet(url: URL) -> None:
        await guarded.resolve(url.host or "", url.port or 0)

    return vet
