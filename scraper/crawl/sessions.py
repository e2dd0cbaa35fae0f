"""Sessions: who the crawl is to one host, and what is done when the host says "blocked".

With fetch.sessions on, a host's session is its cookie jar (`cookies.py`) and the proxy it goes
through (`proxies.py`), with the crawl's headers. A response whose status is in
fetch.blocked_status (401 and 403 by default) retires the host's session: its jar is emptied
(and stored so), it moves to another proxy, and the request is tried again, as a new session,
within fetch.retries (the answer stored is the last one, if every attempt was blocked). A 429
or 503 is no session's fault: it stays the host's (Retry-After, autothrottle), never retires a
session, so a host that throttles cannot make the crawl churn through sessions.

Sessions are per host, as jars and leases are: a session never spans two sites, and the one a
process hands over with a host's lease is the jar it stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse

from scraper.crawl.cookies import CookieJars

TOP_HOSTS = 10  # hosts whose sessions the stats name, the most retired first


class Sessions:
    """Each host's session number (0, 1, ...: one more each time one is retired), and the
    counts the stats keep."""

    def __init__(self, blocked: frozenset[int], jars: CookieJars | None) -> None:
        self.blocked = blocked
        self._jars = jars
        self._generation: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()  # per host, over its sessions
        self.retired: Counter[str] = Counter()

    def generation(self, host: str) -> int:
        """The host's session now: which proxy it goes through, counted from its first."""
        return self._generation[host]

    def middleware(self, host: str) -> HostSession:
        return HostSession(self, host)

    async def retire(self, host: str) -> None:
        """The host said "blocked": a new session for it (fresh cookies, the next proxy)."""
        self._generation[host] += 1
        self.retired[host] += 1
        if self._jars is not None:
            await self._jars.clear(host)

    def stats(self) -> dict[str, object]:
        """What the crawl's counters keep: sessions retired in all, and per host (the most
        retired first) its requests and retirements."""
        top = self.retired.most_common(TOP_HOSTS)
        return {
            "retired": sum(self.retired.values()),
            "hosts": {
                host: {"requests": self.requests[host], "retired": count} for host, count in top
            },
        }


Retire = Callable[[str], Awaitable[None]]


class HostSession:
    """aiohttp client middleware: counts the host's requests, and retires its session when the
    answer says blocked (the retry itself is the fetch stage's: `Identities.retry_statuses`)."""

    __slots__ = ("_host", "_sessions")

    def __init__(self, sessions: Sessions, host: str) -> None:
        self._sessions = sessions
        self._host = host

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        self._sessions.requests[self._host] += 1
        response = await handler(request)
        if response.status in self._sessions.blocked:
            await self._sessions.retire(self._host)
        return response
