"""The PostgreSQL backend: a server shared by any number of crawl processes."""

from __future__ import annotations

from scraper.store.base import NO_RULES, FleetRules
from scraper.store.opened import Opened
from scraper.store.postgres.crawls import PgCrawlLog
from scraper.store.postgres.database import PgDatabase
from scraper.store.postgres.frontier import CREATE_FOUND, PgFrontier
from scraper.store.postgres.gauges import PgFleetGauges
from scraper.store.postgres.leases import PgHostLeases, worker_name
from scraper.store.postgres.writer import PgPageWriter


class PgBackend(Opened):
    """`Backend` (store/base.py): the page writer and the crawl log share the `write` connection
    (a batch's pages, discoveries and done marks are one transaction); leases have their own."""

    def __init__(self, url: str) -> None:
        # Commits need not wait for the server's disk: with them waiting, one worker on the cpu
        # case ran at 0.6-0.77x the SQLite crawler, without 0.84-1.08x. A server that crashes
        # loses its last fraction of a second of commits, each whole (a batch's pages with
        # their discoveries and done marks, a lease with its state), so the crawl resumes from
        # a consistent point and fetches those pages again.
        self._db = PgDatabase(url, setup=(CREATE_FOUND, "SET synchronous_commit = off"))
        self.worker = worker_name()
        self._crawls = PgCrawlLog(self._db, self.worker)

    @property
    def location(self) -> str:
        return self._db.location

    @property
    def crawls(self) -> PgCrawlLog:
        return self._crawls

    def frontier(
        self, crawl_id: int, recrawl_after: float = 0.0, rules: FleetRules = NO_RULES
    ) -> PgFrontier:
        return PgFrontier(self._db, crawl_id, recrawl_after, rules)

    def pages(self, crawl_id: int) -> PgPageWriter:
        return PgPageWriter(self._db, crawl_id, self.worker)

    def leases(
        self, crawl_id: int, *, ttl: float, margin: float, rules: FleetRules = NO_RULES
    ) -> PgHostLeases:
        return PgHostLeases(self._db, crawl_id, self.worker, ttl=ttl, margin=margin, rules=rules)

    def gauges(self, crawl_id: int) -> PgFleetGauges:
        return PgFleetGauges(self._db, crawl_id, self.worker)

    async def join(self, crawl_id: int, rules: FleetRules = NO_RULES) -> None:
        await self._crawls.join(crawl_id)
        await self._crawls.check_rules(crawl_id, rules)

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()
