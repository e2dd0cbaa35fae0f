"""Who a request is, on the wire: the headers, login, cookies and proxy a URL gets.

`Identities` is the crawl's one object for it (built from the `Credentials` read at the edge);
`for_url` gives a request's `RequestIdentity`, a small value any fetch path can apply (aiohttp's
here; a browser's takes its headers, with `cookies_for` and `proxy_for`). The headers are
layered, each layer overriding the one before:

    fetch.user_agent < fetch.headers < every matching fetch.rules entry (in order)
        < the host's [[auth]] login (Basic) < the request's own headers

A login goes only to its own host (host and non-default port, exactly: no subdomain, no other
port). The crawl follows no redirect inside a request (a redirect's target is a frontier URL of
its own), so a redirect to another host is a request to that host, with that host's identity.
Digest logins are answered by aiohttp's DigestAuthMiddleware, given only to their host's
requests.
"""

from __future__ import annotations

import base64
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import DigestAuthMiddleware
from multidict import CIMultiDict, CIMultiDictProxy

from scraper.crawl.cookies import CookieJars
from scraper.crawl.credentials import NONE, Credentials, Headers, Login
from scraper.crawl.proxies import Proxy, ProxyPool, Vet
from scraper.crawl.sessions import Sessions
from scraper.secrets import Secret
from scraper.urls import host_key

KEPT_HOSTS = 10_000  # identities kept (a few hundred bytes each); past it they are built anew


@dataclass(frozen=True, slots=True)
class RequestIdentity:
    """What one request carries: `headers` (values revealed: never log them), the login's
    scheme if the host has one ("basic" is in the headers already; "digest" answers a
    challenge), and `middlewares` for aiohttp's fetch path (the Digest answerer)."""

    headers: Mapping[str, str] = field(repr=False)
    login: str | None = None
    proxied: bool = False  # through fetch.proxies (which one: chosen as it goes, `proxies.py`)
    middlewares: tuple[object, ...] = field(default=(), repr=False)


class Identities:
    """The crawl's headers and logins; `for_url` is asked once per request (and redirect hop)."""

    def __init__(
        self,
        user_agent: str,
        credentials: Credentials = NONE,
        jars: CookieJars | None = None,
        proxies: ProxyPool | None = None,
        vet: Vet | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        """`jars`: the hosts' cookie jars (None: fetch.cookies is off, no cookie is kept);
        `proxies`: the pool requests go through (None: straight to the site); `vet`: how a
        proxied request's target is checked against fetch.block_private (`proxies.py`);
        `sessions`: fetch.sessions, a host's session retired when it says blocked (None: off)."""
        self._sessions = sessions
        self.retry_statuses = sessions.blocked if sessions is not None else frozenset()
        self._jars = jars
        self._proxies = proxies
        self._vet = vet
        self._base: CIMultiDict[str] = CIMultiDict({"User-Agent": user_agent})
        self._base.update(_revealed(credentials.every))
        self._rules = [(globs, _revealed(headers)) for globs, headers in credentials.rules]
        self._logins = dict(credentials.logins)
        # One Digest answerer per host: it keeps the host's nonce, so a later request answers
        # at once instead of after a 401 (aiohttp's `preemptive`, within the host's own space).
        self._digests = {
            host: DigestAuthMiddleware(login.user, login.password.reveal())
            for host, login in self._logins.items()
            if login.scheme == "digest"
        }
        self._by_host: dict[tuple[str, int], RequestIdentity] = {}

    def for_url(self, url: str) -> RequestIdentity:
        """What a request to `url` carries now. Without fetch.rules it depends on the host
        (and its session) alone, so it is built once per host and kept (asked for every
        request: building it costs several times the look-up)."""
        host = host_key(url)
        if self._rules:
            return self._build(url, host)
        session = self._sessions.generation(host) if self._sessions is not None else 0
        key = (host, session)
        identity = self._by_host.get(key)
        if identity is None:
            if len(self._by_host) >= KEPT_HOSTS:
                self._by_host.clear()
            identity = self._by_host[key] = self._build(url, host)
        return identity

    def _build(self, url: str, host: str) -> RequestIdentity:
        # Names are case-insensitive: a rule's "user-agent" replaces fetch.user_agent's.
        headers: CIMultiDict[str] = CIMultiDict(self._base)
        for globs, extra in self._rules:
            if any(fnmatch.fnmatchcase(url, glob) for glob in globs):
                headers.update(extra)
        # aiohttp runs the first middleware outermost: the Digest answerer's second attempt
        # goes through the cookies too, and each attempt's Set-Cookie is taken in.
        middlewares: tuple[object, ...] = ()
        if self._jars is not None:
            middlewares = (self._jars.middleware(host),)
        login = self._logins.get(host)
        scheme = login.scheme if login is not None else None
        if login is not None and scheme == "basic":
            headers["Authorization"] = basic_authorization(login)
        elif login is not None:
            middlewares = (self._digests[host], *middlewares)
        session = self._sessions.generation(host) if self._sessions is not None else 0
        if self._proxies is not None:  # outside those: a Digest answer goes by the same proxy
            middlewares = (self._proxies.middleware(host, self._vet, session), *middlewares)
        if self._sessions is not None:  # outermost: sees the answer the request ends with
            middlewares = (self._sessions.middleware(host), *middlewares)
        return RequestIdentity(
            headers=CIMultiDictProxy(headers),  # (shared by the host's requests: read-only)
            login=scheme,
            proxied=self._proxies is not None,
            middlewares=middlewares,
        )

    def proxy_for(self, url: str) -> Proxy | None:
        """The proxy a request to `url` would go through now (None: none, or all benched)."""
        if self._proxies is None:
            return None
        host = host_key(url)
        session = self._sessions.generation(host) if self._sessions is not None else 0
        return self._proxies.choice(host, session)

    def cookies_for(self, url: str) -> dict[str, str]:
        """The cookies a request to `url` would carry now (for a fetch path of its own)."""
        return self._jars.cookies_for(url) if self._jars is not None else {}

    def trusted_login(self, url: str) -> Login | None:
        """The login of `url`'s host, if any (for a path that authenticates on its own)."""
        return self._logins.get(host_key(url))


def basic_authorization(login: Login) -> str:
    """The `Authorization` value of HTTP Basic (RFC 7617), UTF-8."""
    pair = f"{login.user}:{login.password.reveal()}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _revealed(headers: Headers) -> dict[str, str]:
    return {name: value.reveal() if isinstance(value, Secret) else value for name, value in headers}
