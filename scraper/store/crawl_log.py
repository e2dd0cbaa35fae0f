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
from scraper.store.fleet_health import HEALTH_KEYS

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
    """A process's end of a crawl run: the crawl's summary, the statement that records it in
    the crawl's row (its `counters` left to the backend: `with_health`), the counts for those
    counters, and how this process ran (its health: crawl/crawler.py)."""

    summary: CrawlSummary
    sql: str
    counts: dict[str, Any]  # by_status, by_error
    health: dict[str, Any]
    finished_at: str

    def params(self, health: dict[str, Any]) -> tuple[Any, ...]:
        """The statement's parameters, with the crawl's merged `health` in its counters."""
        s = self.summary
        return (
            self.finished_at,
            s.status,
            s.pages,
            s.errors,
            s.bytes,
            s.duration_s,
            counters_json({**self.counts, **self.other}, health),
            s.crawl_id,
        )

    @property
    def other(self) -> dict[str, Any]:
        """What the process recorded beside its health (kept as it gave it)."""
        return {key: value for key, value in self.health.items() if key not in HEALTH_KEYS}


def counters_json(counters: dict[str, Any], health: dict[str, Any]) -> str:
    """A crawl's `counters` column: `counters` with the crawl's merged `health` in place of any
    health it had."""
    return json.dumps({**{k: v for k, v in counters.items() if k not in HEALTH_KEYS}, **health})


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
        end = CrawlEnd(
            summary=summary,
            sql=sql(_RECORD_END),
            counts={"by_status": counts.by_status, "by_error": counts.by_error},
            health=dict(extra or {}),
            finished_at=utc_now(),
        )
        await self._record(end)
        return summary

    async def _record(self, end: CrawlEnd) -> None:
        """Record `end`, under the backend's locks: its health goes where the backend keeps each
        process's (or the runs' so far), and the crawl's row gets their merge
        (fleet_health.merge_healths)."""
        raise NotImplementedError
