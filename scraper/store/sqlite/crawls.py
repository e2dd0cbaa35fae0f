"""Rows of the `crawls` table, from the crawl's side: start, resume, finish."""

from __future__ import annotations

import json

from scraper.models import SeedList
from scraper.store.base import utc_now
from scraper.store.crawl_log import CrawlEnd, SqlCrawlLog
from scraper.store.dialect import SQLITE
from scraper.store.fleet_health import health_of, merge_healths
from scraper.store.sqlite.database import Database

# A crawl still `running` when another starts is one whose process died (kill -9, a second
# Ctrl-C, a crash): this one holds the database's lock, so nothing else is crawling it.
_DEAD_ARE_INTERRUPTED = "UPDATE crawls SET status = 'interrupted' WHERE status = 'running'"


class SqliteCrawlLog(SqlCrawlLog):
    """`CrawlLog` (store/base.py) on the crawl's shared connection."""

    def __init__(self, db: Database, location: str) -> None:
        super().__init__(db.fetchall, SQLITE, location)
        self._db = db

    async def start(self, seeds: SeedList, config_json: str) -> int:
        async with self._db.transaction() as conn:
            await conn.execute(_DEAD_ARE_INTERRUPTED)
            cursor = await conn.execute(
                "INSERT INTO crawls (started_at, status, seeds, config, seeds_digest, "
                "seeds_count) VALUES (?, 'running', ?, ?, ?, ?)",
                (utc_now(), json.dumps(list(seeds.sample)), config_json, seeds.digest, seeds.count),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def reopen(self, crawl_id: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(_DEAD_ARE_INTERRUPTED)
            await conn.execute(
                "UPDATE crawls SET status = 'running', finished_at = NULL WHERE id = ?",
                (crawl_id,),
            )

    async def _record(self, end: CrawlEnd) -> None:
        """One process at a time works on a SQLite crawl: the health its row keeps is its
        earlier runs' merged, and this run's joins them (a fleet of one a run)."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "SELECT counters FROM crawls WHERE id = ?", (end.summary.crawl_id,)
            )
            row = await cursor.fetchone()
            before = health_of(json.loads(row[0])) if row is not None and row[0] else {}
            health = merge_healths([before, health_of(end.health)])
            await conn.execute(end.sql, end.params(health))
