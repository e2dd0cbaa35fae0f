"""The crawls table's SQL that every backend runs alike, from the crawl's side: which crawl to
resume, and what a crawl's end records. Each backend's crawls.py runs it on its own connection,
with its own locks (PostgreSQL's several processes on one crawl: see postgres/crawls.py).
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


async def unfinished(query: Query, dialect: Dialect, seeds: SeedList) -> tuple[int, int | None]:
    """`CrawlLog.unfinished` (store/base.py)."""
    same = await query(
        dialect.sql(
            "SELECT id, status FROM crawls WHERE seeds_digest = ? "
            "OR (seeds_digest IS NULL AND seeds = ?) ORDER BY id DESC LIMIT 1"
        ),
        (seeds.digest, json.dumps(list(seeds.sample))),
    )
    mine = int(same[0][0]) if same and same[0][1] in RESUMABLE else 0
    newest = await query("SELECT id, status FROM crawls ORDER BY id DESC LIMIT 1", ())
    other = int(newest[0][0]) if newest and newest[0][1] in RESUMABLE else None
    return mine, other if other != mine else None


@dataclass(frozen=True, slots=True)
class CrawlEnd:
    """A crawl's end: its summary, and the statement that records it in its row."""

    summary: CrawlSummary
    sql: str
    params: tuple[Any, ...]


async def crawl_end(
    query: Query,
    dialect: Dialect,
    crawl_id: int,
    status: str,
    run_seconds: float,
    *,
    location: str,
    resumed: bool = False,
    extra: dict[str, Any] | None = None,
) -> CrawlEnd:
    """The counts of what the crawl stored (as `scraper stats` counts them) and its duration
    over all its runs; `CrawlLog.finish` (store/base.py) records them."""
    counts = counts_from(*[await query(dialect.sql(sql), (crawl_id,)) for sql in COUNT_QUERIES])
    before = await query(
        dialect.sql("SELECT coalesce(duration_s, 0) FROM crawls WHERE id = ?"), (crawl_id,)
    )
    summary = CrawlSummary(
        crawl_id=crawl_id,
        status=status,
        db=location,
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
    return CrawlEnd(summary, dialect.sql(_RECORD_END), params)
