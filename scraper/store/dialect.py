"""SQL the backends share, written once, and the few places their dialects differ.

The read side's counts are one text per backend, built here from one template (only the
parameter marker differs), so the summary at a crawl's end and `scraper stats` agree on every
backend. The presets of `scraper query --preset` are written in SQLite's dialect
(results/presets.py, shown in docs/guides/database.md); `PRESETS_POSTGRES` holds the ones
PostgreSQL needs written otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scraper.store.base import CrawlCounts

STATUS_CLASS_SQL = "CASE WHEN status IS NULL THEN 'none' ELSE (status / 100) || 'xx' END"


def count_queries(marker: str) -> tuple[str, str, str]:
    """Pages by status class, pages by error kind, bytes: of one crawl (its id is `marker`)."""
    return (
        f"SELECT {STATUS_CLASS_SQL}, count(*) FROM pages WHERE crawl_id = {marker} "
        "GROUP BY 1 ORDER BY 1",
        "SELECT error_kind, count(*) FROM pages "
        f"WHERE crawl_id = {marker} AND error_kind IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1",
        f"SELECT coalesce(sum(bytes), 0) FROM pages WHERE crawl_id = {marker}",
    )


def counts_from(
    by_status: Iterable[Iterable[Any]], by_error: Iterable[Iterable[Any]], size: Iterable[Any]
) -> CrawlCounts:
    """CrawlCounts from the rows of count_queries(), in that order."""
    (total,) = next(iter(size))
    return CrawlCounts(
        by_status={str(k): int(v) for k, v in by_status},
        by_error={str(k): int(v) for k, v in by_error},
        bytes=int(total),
    )


# A URL's authority (host, and port if any). Canonical URLs always have a path, so it ends at
# the first "/" after "://". Plain SQL, so it streams over any number of rows.
HOST_SQL_SQLITE = (
    "substr(url, instr(url, '://') + 3, instr(substr(url, instr(url, '://') + 3), '/') - 1)"
)
HOST_SQL_POSTGRES = "split_part(split_part(url, '://', 2), '/', 1)"

# Presets whose SQLite text PostgreSQL does not take, or orders otherwise: group_concat is
# string_agg there, and NULL sorts last in ascending order where SQLite sorts it first.
PRESETS_POSTGRES: dict[str, str] = {
    "duplicates": (
        "SELECT text_hash, count(*) AS copies, string_agg(url, ' ' ORDER BY id) AS urls "
        "FROM pages\n"
        "WHERE text_hash IS NOT NULL\n"
        "GROUP BY text_hash HAVING count(*) > 1\n"
        "ORDER BY copies DESC, urls"
    ),
    "status-summary": (
        "SELECT status, error_kind, count(*) AS pages FROM pages\n"
        "GROUP BY status, error_kind\n"
        "ORDER BY pages DESC, status NULLS FIRST"
    ),
}
