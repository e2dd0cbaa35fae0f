"""The crawls table, from the crawl's side, as every backend keeps it alike: which crawl to
resume, and what a crawl's end records. Each backend's crawls.py adds starting a crawl and
writing its end, on its own connection and under its own locks (PostgreSQL's several processes
on one crawl: see postgres/crawls.py).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scraper.models import SeedList
from scraper.store.base import RESUMABLE, CrawlSummary, utc_now
from scraper.store.dialect import COUNT_QUERIES, Dialect, counts_from

# A backend's `fetchall(sql, params)` on the crawl's connection.
Query = Callable[[str, Sequence[Any]], Awaitable[Sequence[Sequence[Any]]]]

# A crawl finished is never recorded again: with several processes on one crawl the first to
# find it over records its end (postgres/crawls.py).
_RECORD_END = (
    "UPDATE crawls SET finished_at = ?, status = ?, pages = ?, errors = ?, bytes = ?, "
    "duration_s = ?, counters = ? WHERE id = ? AND status <> 'finished'"
)


@dataclass(frozen=True, slots=True)
class CrawlEnd:
    """A crawl's end: its summary, and the statement that records it in its row."""

    summary: CrawlSummary
    sql: str
    params: tuple[Any, ...]


class SqlCrawlLog:
    """What every backend's `CrawlLog` (store/base.py) does alike, over its connection's
    `fetchall` and its dialect; a backend adds `start`, `reopen`, and `_record`, which writes
    a crawl's end its own way (under its locks)."""

    def __init__(self, query: Query, dialect: Dialect, location: str) -> None:
        self._query = query
        self._dialect = dialect
        self._location = location

    async def unfinished(self, seeds: SeedList) -> tuple[int, int | None]:
        same = await self._query(
            self._dialect.sql(
                "SELECT id, status FROM crawls WHERE seeds_digest = ? "
                "OR (seeds_digest IS NULL AND seeds = ?) ORDER BY id DESC LIMIT 1"
            ),
            (seeds.digest, json.dumps(list(seeds.sample))),
        )
        mine = int(same[0][0]) if same and same[0][1] in RESUMABLE else 0
        newest = await self._query("SELECT id, status FROM crawls ORDER BY id DESC LIMIT 1", ())
        other = int(newest[0][0]) if newest and newest[0][1] in RESUMABLE else None
        return mine, other if other != mine else None

    async def finish(
        self,
        crawl_id: int,
        status: str,
        run_seconds: float,
        *,
        resumed: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> CrawlSummary:
        """The counts of what the crawl stored (as `scraper stats` counts them) and its
        duration over all its runs, recorded in its row; its summary."""
        sql = self._dialect.sql
        counts = counts_from(*[await self._query(sql(text), (crawl_id,)) for text in COUNT_QUERIES])
        before = await self._query(
            sql("SELECT coalesce(duration_s, 0) FROM crawls WHERE id = ?"), (crawl_id,)
        )
        summary = CrawlSummary(
            crawl_id=crawl_id,
            status=status,
            db=self._location,
            counts=counts,
            duration_s=round(float(before[0][0] if before else 0) + run_seconds, 3),
            resumed=resumed,
        )
        counters = {"by_status": counts.by_status, "by_error": counts.by_error, **(extra or {})}
        params = (
            utc_now(),
            status,
            counts.pages,
            counts.errors,
            counts.bytes,
            summary.duration_s,
            json.dumps(counters),
            crawl_id,
        )
        await self._record(CrawlEnd(summary, sql(_RECORD_END), params))
        return summary

    async def _record(self, end: CrawlEnd) -> None:
        raise NotImplementedError
