"""Host leases on SQLite: one process crawls the database (it holds `<db>.lock`), so it owns
every host. `claim` lists the hosts with pending URLs; the rest does nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

from scraper.store.base import HostPoliteness
from scraper.store.sqlite.frontier import SqliteFrontier


class SqliteHostLeases:
    """`HostLeases` (store/base.py) of the one process."""

    shared = False
    renew_every = 3600.0

    def __init__(self, frontier: SqliteFrontier) -> None:
        self._frontier = frontier

    async def claim(self, limit: int) -> list[HostPoliteness]:
        return [HostPoliteness(host) for host in await self._frontier.pending_hosts(limit)]

    async def fair_share(self) -> int:
        return 1 << 30  # alone: every host

    def valid(self, host: str, now: float) -> bool:
        return True

    async def renew(self) -> list[str]:
        return []

    def release(self, state: HostPoliteness) -> Coroutine[Any, Any, None]:
        return asyncio.sleep(0)

    def remember_robots(self, host: str, record: str) -> Coroutine[Any, Any, None]:
        return asyncio.sleep(0)

    async def over(self) -> bool:
        return True  # the scheduler's own accounting, confirmed by claim(), is the whole truth

    async def close(self, status: str, left: Sequence[HostPoliteness] = ()) -> None:
        pass
