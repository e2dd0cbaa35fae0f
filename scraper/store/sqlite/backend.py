"""The SQLite backend: one file, one crawl process at a time (it holds `<db>.lock`)."""

from __future__ import annotations

from pathlib import Path

from scraper.errors import StorageError
from scraper.store.base import NO_RULES, FleetLoad, FleetRules
from scraper.store.opened import Opened
from scraper.store.sqlite.crawls import SqliteCrawlLog
from scraper.store.sqlite.database import Database
from scraper.store.sqlite.frontier import SqliteFrontier
from scraper.store.sqlite.leases import SqliteHostLeases, StoredJars
from scraper.store.sqlite.writer import SqlitePageWriter


class SqliteBackend(Opened):
    """`Backend` (store/base.py): the frontier, the page writer and the crawl log share one
    connection, so a page writer's transaction covers the frontier rows too."""

    def __init__(self, path: str | Path) -> None:
        self._location = str(path)
        self._db = Database(path)
        self._crawls = SqliteCrawlLog(self._db, self._location)
        # The frontier last made for each crawl: its host leases share its page counts.
        self._frontiers: dict[int, SqliteFrontier] = {}

    @property
    def location(self) -> str:
        return self._location

    @property
    def crawls(self) -> SqliteCrawlLog:
        return self._crawls

    def frontier(
        self, crawl_id: int, recrawl_after: float = 0.0, rules: FleetRules = NO_RULES
    ) -> SqliteFrontier:
        frontier = self._frontiers[crawl_id] = SqliteFrontier(
            self._db, crawl_id, recrawl_after, rules
        )
        return frontier

    def pages(self, crawl_id: int) -> SqlitePageWriter:
        return SqlitePageWriter(self._db, crawl_id)

    def leases(
        self, crawl_id: int, *, ttl: float, margin: float, rules: FleetRules = NO_RULES
    ) -> SqliteHostLeases:
        frontier = self._frontiers.get(crawl_id) or self.frontier(crawl_id, rules=rules)
        return SqliteHostLeases(frontier, StoredJars(self._db, crawl_id))

    def gauges(self, crawl_id: int) -> AloneGauges:
        return AloneGauges()

    async def join(self, crawl_id: int, rules: FleetRules = NO_RULES) -> None:
        raise StorageError(
            f"{self._location}: a SQLite database has one crawl process; several processes on "
            "one crawl need PostgreSQL (storage.db = postgresql://...)"
        )

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()


class AloneGauges:
    """`FleetGauges` (store/base.py) of a SQLite crawl's one process: no other process to share
    with, and the frontier's pending URLs not counted (its index is by host: a count would scan
    every URL of the crawl, done ones included, on the connection the sink writes on)."""

    async def exchange(self, queued: int, in_flight: int, *, count_pending: bool) -> FleetLoad:
        return FleetLoad()
