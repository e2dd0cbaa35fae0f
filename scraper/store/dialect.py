"""The few places where the backends' SQL differs, so that every query is written once.

The shared texts (the results reader in reader.py, the crawls table's in crawl_log.py) are in
SQLite's words with `?` markers; `Dialect.sql` gives them to psycopg with its `%s`. What else
differs: how a URL's host is cut out, how a stored time subtracts, how a JSON text column is
read, and the presets of `scraper query --preset` whose SQLite text PostgreSQL does not take.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scraper.store.base import CrawlCounts

# A page this crawl found unchanged (a 304 to its conditional request) keeps its stored status,
# and counts as "not modified", not as the 2xx it was stored with.
STATUS_CLASS_SQL = (
    "CASE WHEN not_modified = 1 THEN 'not modified' "
    "WHEN status IS NULL THEN 'none' ELSE (status / 100) || 'xx' END"
)

# Pages by status class, pages by error kind, bytes: of one crawl. The summary at a crawl's end
# (crawl_log.py) and `scraper stats` (reader.py) count with these, so they cannot disagree.
COUNT_QUERIES = (
    f"SELECT {STATUS_CLASS_SQL}, count(*) FROM pages WHERE crawl_id = ? GROUP BY 1 ORDER BY 1",
    "SELECT error_kind, count(*) FROM pages "
    "WHERE crawl_id = ? AND error_kind IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1",
    "SELECT coalesce(sum(bytes), 0) FROM pages WHERE crawl_id = ?",
)


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


@dataclass(frozen=True, slots=True)
class Dialect:
    """One backend's words for what the shared SQL says. The templates take SQL expressions."""

    name: str
    marker: str  # the driver's parameter marker, for `?`
    host: str  # SQL: the authority of the row's `url`
    time: str  # "{}": a stored time (ISO 8601 text) as a value two of which subtract
    seconds: str  # "{}": such a difference, in seconds
    floor: str  # "{}": a number of seconds >= 0, rounded down to a whole number
    json: str  # "{}": a JSON text column, as the json_* functions take it
    presets: Mapping[str, str] = field(default_factory=dict)  # name -> its text here
    fleet: bool = False  # several processes on one crawl, each a row of the workers table

    def sql(self, text: str) -> str:
        """`text`, written with `?` markers, in the driver's parameter style."""
        if self.marker == "?":
            return text
        return text.replace("%", "%%").replace("?", self.marker)

    def seconds_between(self, earlier: str, later: str) -> str:
        """SQL: seconds from the time value `earlier` to `later` (each made by `time`)."""
        return self.seconds.format(f"{later} - {earlier}")


SQLITE = Dialect(
    name="sqlite",
    marker="?",
    host=HOST_SQL_SQLITE,
    time="julianday({})",  # days, fractional
    seconds="(({}) * 86400)",
    floor="CAST({} AS INTEGER)",  # truncates: the floor of what is never negative
    json="{}",
)
POSTGRES = Dialect(
    name="postgresql",
    marker="%s",
    host=HOST_SQL_POSTGRES,
    time="{}::timestamptz",
    seconds="extract(epoch FROM {})",
    floor="floor({})::int",
    json="{}::json",
    presets=PRESETS_POSTGRES,
    fleet=True,
)
