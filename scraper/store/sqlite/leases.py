"""Host leases on SQLite: one process crawls the database (it holds `<db>.lock`), so it owns
every host, and its leases live in its memory: a lease never expires nor is taken over, and
claiming, taking and releasing a host cost no statement but `claim`'s look for hosts with
pending URLs.

`claim` pages through those hosts in host order from where the last claim stopped (so a crawl of
more hosts than it holds at once takes them all in turn), past the hosts held and those at
crawl.max_pages_per_host; one that returns fewer than asked has looked at every host. `over` is
the frontier's word: the crawl's page budget spent, or no pending URL of a host below its cap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from scraper.store.base import HostPoliteness
from scraper.store.sqlite.database import Database

OVER_PAGE = 100  # hosts looked at per statement by `over`


class OwnFrontier(Protocol):
    """What the leases need of the frontier they share the process with (SqliteFrontier)."""

    @property
    def spent(self) -> bool: ...

    def capped(self, host: str) -> bool: ...

    def forget(self, host: str) -> None: ...

    async def pending_hosts(self, limit: int, after: str = "") -> list[str]: ...


class SqliteHostLeases:
    """`HostLeases` (store/base.py) of the one process."""

    shared = False
    renew_every = None  # nothing expires, and no other process lets hosts go

    def __init__(self, frontier: OwnFrontier, jars: StoredJars | None = None) -> None:
        """`jars`: where the hosts' cookie jars are kept (None: in memory only)."""
        self._frontier = frontier
        self._jars = jars
        self._held: set[str] = set()
        self._cursor = ""  # where the next claim looks from (host keys, in order)
        self._cookies: dict[str, str] | None = None  # each host's jar as stored, once read

    async def claim(self, limit: int) -> list[HostPoliteness]:
        if self._cookies is None:  # (a resumed crawl's jars: read once, at the first claim)
            self._cookies = await self._jars.read() if self._jars is not None else {}
        if self._frontier.spent or limit <= 0:
            return []
        found: list[str] = []
        start, wrapped = self._cursor, False
        while True:
            page = await self._frontier.pending_hosts(limit, after=self._cursor)
            for host in page:
                if wrapped and host > start:
                    return self._took(found)  # round to where it began: every host seen
                self._cursor = host
                if self._claimable(host):
                    found.append(host)
                    if len(found) == limit:
                        return self._took(found)
            if len(page) < limit:  # the end of the table: on from its beginning, once
                self._cursor = ""
                if wrapped or not start:
                    return self._took(found)
                wrapped = True

    def _took(self, hosts: list[str]) -> list[HostPoliteness]:
        self._held.update(hosts)
        jars = self._cookies or {}
        return [HostPoliteness(host, cookies=jars.get(host)) for host in hosts]

    def _claimable(self, host: str) -> bool:
        return host not in self._held and not self._frontier.capped(host)

    def take(self, host: str) -> HostPoliteness | None:
        if self._frontier.spent or not self._claimable(host):
            return None
        return self._took([host])[0]

    async def fair_share(self) -> int:
        return 1 << 30  # alone: every host

    def holds(self, host: str) -> bool:
        return True  # every host is this process's: none is another's to crawl

    def valid(self, host: str, now: float) -> bool:
        return True

    async def renew(self) -> list[str]:
        return []

    def release(self, state: HostPoliteness) -> Coroutine[Any, Any, None]:
        self._held.discard(state.host)
        self._frontier.forget(state.host)
        return asyncio.sleep(0)

    def remember_robots(self, host: str, record: str) -> Coroutine[Any, Any, None]:
        return asyncio.sleep(0)  # its next owner is this process: RobotsGate's cache has it

    async def remember_cookies(self, host: str, record: str) -> None:
        if self._cookies is not None:
            self._cookies[host] = record
        if self._jars is not None:
            await self._jars.write(host, record)

    async def over(self) -> bool:
        """The budget spent, or no pending URL of a host below its cap. Asked when the scheduler
        has nothing left: a host found here that it holds has escaped its bookkeeping (a lease
        that raced a commit), so it is let go, and the next claim takes it up again."""
        if self._frontier.spent:
            return True
        after = ""
        while True:
            page = await self._frontier.pending_hosts(OVER_PAGE, after=after)
            left = [host for host in page if not self._frontier.capped(host)]
            if left:
                self._held.difference_update(left)
                return False
            if len(page) < OVER_PAGE:
                return True
            after = page[-1]

    async def close(self, status: str, left: Sequence[HostPoliteness] = ()) -> None:
        self._held.clear()


class StoredJars:
    """The `cookies` table of one crawl: each host's jar, as `crawl/cookies.py` records it."""

    def __init__(self, db: Database, crawl_id: int) -> None:
        self._db = db
        self._crawl_id = crawl_id

    async def read(self) -> dict[str, str]:
        rows = await self._db.fetchall(
            "SELECT host, jar FROM cookies WHERE crawl_id = ?", (self._crawl_id,)
        )
        return {host: jar for host, jar in rows}

    async def write(self, host: str, record: str) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO cookies (crawl_id, host, jar) VALUES (?, ?, ?) "
                "ON CONFLICT (crawl_id, host) DO UPDATE SET jar = excluded.jar",
                (self._crawl_id, host, record),
            )
