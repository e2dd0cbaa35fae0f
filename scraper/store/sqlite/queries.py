"""SQL that both sides run: the crawl writing its end (aiosqlite) and the read-side commands
(sqlite3). One text each, so the summary at the end and `scraper stats` cannot disagree."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scraper.store.base import CrawlCounts

STATUS_CLASS_SQL = "CASE WHEN status IS NULL THEN 'none' ELSE (status / 100) || 'xx' END"
# The URL's authority (host, and port if any). Canonical URLs always have a path, so the authority
# ends at the first "/" after "://". Plain SQL, so it streams over any number of rows.
HOST_SQL = "substr(url, instr(url, '://') + 3, instr(substr(url, instr(url, '://') + 3), '/') - 1)"

COUNT_BY_STATUS = (
    f"SELECT {STATUS_CLASS_SQL}, count(*) FROM pages WHERE crawl_id = ? GROUP BY 1 ORDER BY 1"
)
COUNT_BY_ERROR = (
    "SELECT error_kind, count(*) FROM pages WHERE crawl_id = ? AND error_kind IS NOT NULL "
    "GROUP BY 1 ORDER BY 2 DESC, 1"
)
SUM_BYTES = "SELECT coalesce(sum(bytes), 0) FROM pages WHERE crawl_id = ?"
COUNT_QUERIES = (COUNT_BY_STATUS, COUNT_BY_ERROR, SUM_BYTES)


def counts_from(
    by_status: Iterable[Iterable[Any]], by_error: Iterable[Iterable[Any]], size: Iterable[Any]
) -> CrawlCounts:
    """CrawlCounts from the rows of COUNT_QUERIES, in that order."""
    (total,) = next(iter(size))
    return CrawlCounts(
        by_status={str(k): int(v) for k, v in by_status},
        by_error={str(k): int(v) for k, v in by_error},
        bytes=int(total),
    )
