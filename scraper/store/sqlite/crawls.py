"""Rows of the `crawls` table, from the crawl's side: start, resume, finish."""

from __future__ import annotations

import json

from scraper.models import SeedList
from scraper.store.base import utc_now
from scraper.store.crawl_log import CrawlEnd, SqlCrawlLog
from scraper.store.dialect import SQLITE
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
        async with self._db.transaction() as conn:
            await conn.execute(end.sql, end.params)
