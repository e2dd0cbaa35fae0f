"""Rows of the `crawls` table, from the crawl's side: start, resume, finish."""

from __future__ import annotations

import json
from typing import Any

from scraper.models import SeedList
from scraper.store.base import RESUMABLE, CrawlSummary, utc_now
from scraper.store.dialect import counts_from
from scraper.store.sqlite.database import Database
from scraper.store.sqlite.queries import COUNT_QUERIES

# A crawl still `running` when another starts is one whose process died (kill -9, a second
# Ctrl-C, a crash): this one holds the database's lock, so nothing else is crawling it.
_DEAD_ARE_INTERRUPTED = "UPDATE crawls SET status = 'interrupted' WHERE status = 'running'"


class SqliteCrawlLog:
    """`CrawlLog` (store/base.py) on the crawl's shared connection."""

    def __init__(self, db: Database, location: str) -> None:
        self._db = db
        self._location = location

    async def unfinished(self, seeds: SeedList) -> tuple[int, int | None]:
        same = await self._db.fetchall(
            "SELECT id, status FROM crawls WHERE seeds_digest = ? "
            "OR (seeds_digest IS NULL AND seeds = ?) ORDER BY id DESC LIMIT 1",
            (seeds.digest, json.dumps(list(seeds.sample))),
        )
        mine = int(same[0][0]) if same and same[0][1] in RESUMABLE else 0
        newest = await self._db.fetchall("SELECT id, status FROM crawls ORDER BY id DESC LIMIT 1")
        other = int(newest[0][0]) if newest and newest[0][1] in RESUMABLE else None
        return mine, other if other != mine else None

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

    async def finish(
        self,
        crawl_id: int,
        status: str,
        run_seconds: float,
        *,
        resumed: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> CrawlSummary:
        results = [await self._db.fetchall(sql, (crawl_id,)) for sql in COUNT_QUERIES]
        counts = counts_from(*results)
        before = await self._db.scalar(
            "SELECT coalesce(duration_s, 0) FROM crawls WHERE id = ?", (crawl_id,)
        )
        summary = CrawlSummary(
            crawl_id=crawl_id,
            status=status,
            db=self._location,
            counts=counts,
            duration_s=round(float(before or 0) + run_seconds, 3),
            resumed=resumed,
        )
        counters = {"by_status": counts.by_status, "by_error": counts.by_error, **(extra or {})}
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE crawls SET finished_at = ?, status = ?, pages = ?, errors = ?, "
                "bytes = ?, duration_s = ?, counters = ? WHERE id = ?",
                (
                    utc_now(),
                    status,
                    counts.pages,
                    counts.errors,
                    counts.bytes,
                    summary.duration_s,
                    json.dumps(counters),
                    crawl_id,
                ),
            )
        return summary
