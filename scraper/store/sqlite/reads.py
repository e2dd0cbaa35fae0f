"""Read-only access to a SQLite results database, for the commands that run after (or beside) a
crawl: query, stats, export, report, crawls.

These run at the CLI's edge with no event loop, so plain sqlite3 is the right tool. The file is
opened read-only (a crawl may be writing it: WAL lets both go on) and must be one of ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scraper.errors import QueryError, StorageError
from scraper.store.base import CrawlCounts, CrawlRow, HostCount, Rows
from scraper.store.dialect import counts_from
from scraper.store.sqlite.database import crawl_in_progress
from scraper.store.sqlite.errors import explain_sqlite
from scraper.store.sqlite.queries import COUNT_QUERIES, HOST_SQL
from scraper.store.sqlite.schema import APPLICATION_ID

# Authorizer action codes that change the database (sqlite3 module constants).
_WRITES = {
    getattr(sqlite3, name)
    for name in dir(sqlite3)
    if name.startswith(("SQLITE_CREATE_", "SQLITE_DROP_", "SQLITE_ALTER"))
} | {
    sqlite3.SQLITE_INSERT,
    sqlite3.SQLITE_UPDATE,
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_ATTACH,
    sqlite3.SQLITE_DETACH,
    sqlite3.SQLITE_TRANSACTION,
}


@contextlib.contextmanager
def open_sqlite_results(db_path: str | Path) -> Iterator[SqliteResults]:
    """A read-only view of a scraper database, closed at the end of the block."""
    path = Path(db_path)
    if not path.is_file():
        raise StorageError(f"{path}: no such database (crawl first, or pass --db)")
    conn = _connect(path)
    try:
        app_id = _application_id(conn, path)
    except _NeedsWrite:
        # A WAL database whose file and folder we may not write: SQLite cannot create the index
        # file readers share, so read the file as it stands. (Should another user's crawl be
        # writing it, this reader may miss its latest pages.)
        conn.close()
        conn = _connect(path, immutable=True)
        app_id = _application_id(conn, path)
    with contextlib.closing(conn):
        if app_id != APPLICATION_ID:
            raise StorageError(f"{path}: not a scraper database")
        yield SqliteResults(conn, path)


class _NeedsWrite(Exception):
    pass


def _connect(path: Path, *, immutable: bool = False) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        return sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot open the database: {explain_sqlite(exc)}") from exc


def _application_id(conn: sqlite3.Connection, path: Path) -> int:
    try:
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    except sqlite3.OperationalError as exc:
        if "readonly" in str(exc):
            raise _NeedsWrite from exc
        conn.close()
        raise StorageError(f"{path}: cannot read the database: {explain_sqlite(exc)}") from exc
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"{path}: cannot read the database: {explain_sqlite(exc)}") from exc
    return int(app_id)


class SqliteResults:
    """`ResultsReader` (store/base.py) over a read-only sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    @property
    def location(self) -> str:
        return str(self._path)

    def _crawling(self) -> bool:
        return crawl_in_progress(self._path)

    def find_crawl(self, crawl_id: int | None = None) -> CrawlRow:
        """If the table says `running`, the database's lock is probed: with no process holding
        it, the row is read again (a crawl that ended meanwhile shows its end by then), and one
        still `running` died without recording its end: it is `interrupted`."""
        conn = self._conn
        crawl = self._crawl_row(crawl_id)
        if crawl is not None and crawl.status == "running" and not self._crawling():
            crawl = self._crawl_row(crawl.id)
            if crawl is not None and crawl.status == "running":
                # It ended with its last page (not now: its duration must not grow with time).
                (last,) = conn.execute(
                    "SELECT max(fetched_at) FROM pages WHERE crawl_id = ?", (crawl.id,)
                ).fetchone()
                ended = last or crawl.started_at
                crawl = dataclasses.replace(crawl, status="interrupted", finished_at=ended)
        if crawl is not None:
            return crawl
        first, last = conn.execute("SELECT min(id), max(id) FROM crawls").fetchone()
        if first is None:
            raise StorageError("the database holds no crawl yet")
        known = f"{first}" if first == last else f"{first} to {last}"
        raise StorageError(f"--crawl {crawl_id}: no such crawl (this database has crawl {known})")

    def _crawl_row(self, crawl_id: int | None) -> CrawlRow | None:
        sql = "SELECT id, status, started_at, finished_at, duration_s, counters, seeds FROM crawls"
        if crawl_id is None:
            row = self._conn.execute(f"{sql} ORDER BY id DESC LIMIT 1").fetchone()
        else:
            row = self._conn.execute(f"{sql} WHERE id = ?", (crawl_id,)).fetchone()
        return CrawlRow(*row) if row is not None else None

    def list_crawls(self) -> Rows:
        """Each crawl with its state and counters. A crawl the table still calls `running` may
        have died without recording its end (kill -9, a second Ctrl-C): the lock is probed after
        the table is read; if no process holds it, the table is read again (a crawl that ended
        meanwhile shows its end by then), and a row `running` both times is `interrupted`."""
        columns, rows = self._crawl_rows()
        running = {row[0] for row in rows if row[1] == "running"}
        if running and not self._crawling():
            columns, rows = self._crawl_rows()
            rows = [
                (row[0], "interrupted", *row[2:])
                if row[0] in running and row[1] == "running"
                else row
                for row in rows
            ]
        return Rows(columns, iter(rows))

    def _crawl_rows(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        # A crawl from a seeds file keeps the first ten seeds; say how many there were. (A
        # database older than schema v5 has no seeds_count, and is read as it is.)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(crawls)")}
        seeds = "c.seeds"
        if "seeds_count" in columns:
            seeds = (
                "CASE WHEN c.seeds_count > json_array_length(c.seeds) THEN "
                "c.seeds || ' (' || c.seeds_count || ' seeds)' ELSE c.seeds END AS seeds"
            )
        cursor = self._conn.execute(
            "SELECT c.id, c.status, c.started_at, c.finished_at, c.pages, c.errors, "
            "  (SELECT count(*) FROM frontier f WHERE f.crawl_id = c.id AND f.state < 2) "
            f"  AS pending, c.duration_s, {seeds} FROM crawls c ORDER BY c.id"
        )
        return [d[0] for d in cursor.description], cursor.fetchall()

    def counts(self, crawl_id: int) -> CrawlCounts:
        return counts_from(*(self._conn.execute(sql, (crawl_id,)) for sql in COUNT_QUERIES))

    def top_hosts(self, crawl_id: int, limit: int) -> list[HostCount]:
        rows = self._conn.execute(
            f"SELECT {HOST_SQL} AS host, count(*), count(error_kind) FROM pages "
            "WHERE crawl_id = ? GROUP BY host ORDER BY 2 DESC, host LIMIT ?",
            (crawl_id, limit),
        )
        return [HostCount(*row) for row in rows]

    def latencies(self, crawl_id: int) -> tuple[int, Iterator[float]]:
        where = "FROM pages WHERE crawl_id = ? AND elapsed_ms IS NOT NULL"
        (count,) = self._conn.execute(f"SELECT count(*) {where}", (crawl_id,)).fetchone()
        values = self._conn.execute(f"SELECT elapsed_ms {where} ORDER BY elapsed_ms", (crawl_id,))
        return count, (value for (value,) in values)

    def host_latencies(
        self, crawl_id: int, hosts: int
    ) -> tuple[dict[str, int], Iterator[tuple[str, float]]]:
        counts = dict(
            self._conn.execute(
                f"SELECT {HOST_SQL} AS host, count(*) FROM pages "
                "WHERE crawl_id = ? AND elapsed_ms IS NOT NULL "
                "GROUP BY host ORDER BY 2 DESC, host LIMIT ?",
                (crawl_id, hosts),
            ).fetchall()
        )
        rows = self._conn.execute(
            f"SELECT {HOST_SQL} AS host, elapsed_ms FROM pages "
            "WHERE crawl_id = ? AND elapsed_ms IS NOT NULL ORDER BY host, elapsed_ms",
            (crawl_id,),
        )
        return counts, ((host, ms) for host, ms in rows)

    def fetch_span(self, crawl_id: int) -> float | None:
        first, last = self._conn.execute(
            "SELECT min(julianday(fetched_at)), max(julianday(fetched_at)) FROM pages "
            "WHERE crawl_id = ?",
            (crawl_id,),
        ).fetchone()
        return None if first is None else (last - first) * 86400

    def pages_per_bucket(self, crawl_id: int, width: float) -> dict[int, int]:
        rows = self._conn.execute(
            "SELECT CAST((julianday(fetched_at) - (SELECT min(julianday(fetched_at)) FROM pages "
            "WHERE crawl_id = ?1)) * 86400 / ?2 AS INTEGER), count(*) "
            "FROM pages WHERE crawl_id = ?1 GROUP BY 1",
            (crawl_id, width),
        )
        return dict(rows.fetchall())

    def status_counts(self, crawl_id: int) -> list[tuple[str, int]]:
        return self._conn.execute(
            "SELECT coalesce(CAST(status AS TEXT), 'no response'), count(*) FROM pages "
            "WHERE crawl_id = ? GROUP BY status ORDER BY status IS NULL, status",
            (crawl_id,),
        ).fetchall()

    def depth_counts(self, crawl_id: int) -> list[tuple[int, int]]:
        return self._conn.execute(
            "SELECT depth, count(*) FROM pages WHERE crawl_id = ? GROUP BY depth ORDER BY depth",
            (crawl_id,),
        ).fetchall()

    def errors_by_kind(self, crawl_id: int) -> list[tuple[str, int, str, str | None]]:
        # A bare column beside max() comes from the row holding the max: SQLite's documented rule.
        return self._conn.execute(
            "SELECT error_kind, count(*), max(url), error FROM pages "
            "WHERE crawl_id = ? AND error_kind IS NOT NULL GROUP BY error_kind ORDER BY 2 DESC, 1",
            (crawl_id,),
        ).fetchall()

    def error_pages(self, crawl_id: int, limit: int) -> list[tuple[Any, ...]]:
        return self._conn.execute(
            "SELECT url, status, error_kind, error, referrer FROM pages "
            "WHERE crawl_id = ? AND error_kind IS NOT NULL ORDER BY error_kind, url LIMIT ?",
            (crawl_id, limit),
        ).fetchall()

    def pages(self, crawl_id: int | None) -> Rows:
        where, params = _of_crawl(crawl_id)
        cursor = self._conn.execute(f"SELECT * FROM pages {where} ORDER BY id", params)
        return Rows([d[0] for d in cursor.description], cursor)

    def field_names(self, crawl_id: int | None) -> list[str]:
        where, params = _of_crawl(crawl_id)
        where = f"{where} AND" if where else "WHERE"
        return [
            name
            for (name,) in self._conn.execute(
                f"SELECT DISTINCT j.key FROM pages, json_each(pages.fields) AS j "
                f"{where} pages.fields IS NOT NULL ORDER BY 1",
                params,
            )
        ]

    def seeds(self) -> list[str]:
        return [seeds for (seeds,) in self._conn.execute("SELECT seeds FROM crawls")]

    def worker_shares(self, crawl_id: int) -> list[tuple[str, int, str]]:
        return []  # one process per crawl

    def preset_sql(self, name: str, sql: str) -> str:
        return sql  # the presets are written in SQLite's dialect

    def run_query(self, sql: str, *, timeout: float | None = None) -> Rows:
        """Guarded twice: the file is open read-only, and an authorizer refuses every action
        that writes, so the user hears "refused" rather than a read-only error. SQLite asks
        the authorizer for an UPDATE of sqlite_master's columns when it reads the schema (the
        first table-valued function, json_each or pragma_table_info, does): that one is a
        read. A progress handler ends the statement after `timeout` seconds, and lets Ctrl-C
        in: a Python signal handler runs only between bytecodes, which a long step has none
        of until the handler is called."""
        refused: list[int] = []

        def authorize(action: int, table: str | None, *_: Any) -> int:
            if action == sqlite3.SQLITE_UPDATE and table in _SCHEMA_TABLES:
                return sqlite3.SQLITE_OK
            if action in _WRITES:
                refused.append(action)
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK

        deadline = None if timeout is None else time.monotonic() + timeout
        self._conn.set_authorizer(authorize)
        self._conn.set_progress_handler(
            lambda: deadline is not None and time.monotonic() > deadline, _PROGRESS_STEPS
        )
        guard = _Guard(refused, timeout)
        try:
            cursor = self._conn.execute(sql)
        except sqlite3.Error as exc:
            raise guard.error(exc) from exc
        return Rows([d[0] for d in cursor.description or ()], guard.rows(cursor))


# SQLite virtual machine steps between two calls of the progress handler: ~1 ms of work.
_PROGRESS_STEPS = 10_000
_SCHEMA_TABLES = ("sqlite_master", "sqlite_temp_master", "sqlite_schema")


class _Guard:
    """Turns SQLite's errors in a user's statement into what the user should hear."""

    def __init__(self, refused: list[int], timeout: float | None) -> None:
        self._refused = refused
        self._timeout = timeout

    def rows(self, cursor: sqlite3.Cursor) -> Iterator[tuple[Any, ...]]:
        """The cursor's rows; an error while stepping through them is the statement's."""
        try:
            yield from cursor
        except sqlite3.Error as exc:
            raise self.error(exc) from exc

    def error(self, exc: sqlite3.Error) -> BaseException:
        if self._refused:
            return QueryError("refused: `scraper query` only reads, and this statement writes")
        if isinstance(exc, sqlite3.OperationalError) and str(exc) == "interrupted":
            if self._timeout is not None:
                return QueryError(f"the query ran past --timeout {self._timeout:g} s; stopped")
            return KeyboardInterrupt()  # Ctrl-C reached us through the progress handler
        return QueryError(f"bad SQL: {exc}")


def _of_crawl(crawl_id: int | None) -> tuple[str, tuple[Any, ...]]:
    return ("WHERE crawl_id = ?", (crawl_id,)) if crawl_id is not None else ("", ())
