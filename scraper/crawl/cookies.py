"""Cookies: a jar per host, kept with the host's lease.

Each host (host and non-default port, the unit of politeness and of leases) has a jar of its
own, so a `Set-Cookie` from one site never reaches another's requests, whatever its Domain
says; within a host's jar the usual rules (RFC 6265, aiohttp's CookieJar: path, expiry, Secure)
choose what a request carries. aiohttp's own session-wide jar is off (`DummyCookieJar`).

The jar travels with the host: when a response changes it, the jar is written to the host's row
(`HostLeases.remember_cookies`) before the response is handed on, so a crawl killed at any
instant resumes with the cookies of every page it stored; the process that leases the host next
(this one after a restart, or another of a fleet on PostgreSQL) receives it with the lease
(`HostPoliteness.cookies`) through `CookieLeases`, which wraps the backend's leases.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, CookieJar, hdrs
from yarl import URL

from scraper.store.base import HostLeases, HostPoliteness
from scraper.urls import host_key

Store = Callable[[str, str], Awaitable[None]]


class CookieJars:
    """The crawl's jars, one per host; `middleware(host)` is what a request to the host goes
    through (its cookies sent, the response's taken in, the jar stored when it changed)."""

    def __init__(self, store: Store | None = None) -> None:
        self._jars: dict[str, CookieJar] = {}
        self._store = store

    def middleware(self, host: str) -> HostCookies:
        return HostCookies(self, host)

    def jar(self, host: str) -> CookieJar:
        jar = self._jars.get(host)
        if jar is None:
            # unsafe: a jar holds one host's cookies, so an IP address as host is no risk
            jar = self._jars[host] = CookieJar(unsafe=True)
        return jar

    def cookies_for(self, url: str) -> dict[str, str]:
        """The cookies a request to `url` carries (name → value): for a path that sends them
        itself (a browser's)."""
        host = host_key(url)
        if host not in self._jars:
            return {}
        return {name: m.value for name, m in self._jars[host].filter_cookies(URL(url)).items()}

    def adopt(self, host: str, record: str | None) -> None:
        """The host's jar as its last holder stored it (`record`), or an empty one."""
        self._jars.pop(host, None)
        if record:
            self.jar(host).update_cookies_from_headers(_restored(record), URL(f"http://{host}/"))

    async def clear(self, host: str) -> None:
        """A new session for the host (`sessions.py`): no cookie kept, and none stored."""
        had = host in self._jars and len(self._jars[host]) > 0
        self._jars.pop(host, None)
        if had and self._store is not None:
            await self._store(host, "[]")

    def forget(self, host: str) -> None:
        """The host is no longer this process's: its next owner has the jar."""
        self._jars.pop(host, None)

    def record(self, host: str) -> str:
        """The host's jar as stored: a JSON list of its cookies as Set-Cookie values."""
        jar = self._jars.get(host)
        return json.dumps(sorted(m.OutputString() for m in jar)) if jar is not None else "[]"

    async def taken_in(self, host: str, response: ClientResponse) -> None:
        set_cookies = response.headers.getall(hdrs.SET_COOKIE, ())
        if not set_cookies:
            return
        before = self.record(host)
        self.jar(host).update_cookies_from_headers(list(set_cookies), response.url)
        after = self.record(host)
        if after != before and self._store is not None:
            await self._store(host, after)


class HostCookies:
    """aiohttp client middleware: a request to `host` with that host's cookies."""

    __slots__ = ("_host", "_jars")

    def __init__(self, jars: CookieJars, host: str) -> None:
        self._jars = jars
        self._host = host

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        cookies = self._jars.jar(self._host).filter_cookies(request.url)
        if cookies:
            sent = "; ".join(f"{name}={m.coded_value}" for name, m in cookies.items())
            mine = request.headers.get(hdrs.COOKIE)  # a spider's own, first
            request.headers[hdrs.COOKIE] = f"{mine}; {sent}" if mine else sent
        response = await handler(request)
        await self._jars.taken_in(self._host, response)
        return response


def _restored(record: str) -> list[str]:
    try:
        cookies = json.loads(record)
    except ValueError:
        return []  # (a row this version did not write: start the host with no cookies)
    return [c for c in cookies if isinstance(c, str)] if isinstance(cookies, list) else []


class CookieLeases:
    """The backend's `HostLeases`, with each host's jar handed over with its lease: adopted
    when the host is granted (claimed or taken), forgotten when it goes (released, lost)."""

    def __init__(self, leases: HostLeases, jars: CookieJars) -> None:
        self._leases = leases
        self._jars = jars

    @property
    def shared(self) -> bool:
        return self._leases.shared

    @property
    def renew_every(self) -> float | None:
        return self._leases.renew_every

    async def claim(self, limit: int) -> list[HostPoliteness]:
        return self._adopted(await self._leases.claim(limit))

    async def fair_share(self) -> int:
        return await self._leases.fair_share()

    def take(self, host: str) -> HostPoliteness | None:
        grant = self._leases.take(host)
        return self._adopted([grant])[0] if grant is not None else None

    def holds(self, host: str) -> bool:
        return self._leases.holds(host)

    def valid(self, host: str, now: float) -> bool:
        return self._leases.valid(host, now)

    async def renew(self) -> list[str]:
        lost = await self._leases.renew()
        for host in lost:
            self._jars.forget(host)
        return lost

    def release(self, state: HostPoliteness) -> Coroutine[Any, Any, None]:
        self._jars.forget(state.host)
        return self._leases.release(state)

    def remember_robots(self, host: str, record: str) -> Coroutine[Any, Any, None]:
        return self._leases.remember_robots(host, record)

    def remember_cookies(self, host: str, record: str) -> Coroutine[Any, Any, None]:
        return self._leases.remember_cookies(host, record)

    async def over(self) -> bool:
        return await self._leases.over()

    async def close(self, status: str, left: Sequence[HostPoliteness] = ()) -> None:
        await self._leases.close(status, left)

    def _adopted(self, grants: list[HostPoliteness]) -> list[HostPoliteness]:
        for grant in grants:
            self._jars.adopt(grant.host, grant.cookies)
        return grants
