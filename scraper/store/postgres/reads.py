"""Read-only access to a PostgreSQL results database, for the commands that run after (or beside)
a crawl: query, stats, export, report, crawls.

These run at the CLI's edge with no event loop: psycopg's plain connection (the same library as
the crawl's async one). The session is read-only (`default_transaction_read_only`), every read is
in a read-only transaction, and the database must be ours. Large results are streamed through a
server-side cursor, so memory stays flat.

`run_query` takes one statement: it is sent with the extended protocol, which refuses a second
statement ("SELECT 1; DELETE ..."), inside a READ ONLY transaction, which refuses every write
(INSERT, UPDATE, DELETE, DDL, nextval, ...). For a guarantee that holds against functions with
effects outside the database (a superuser's COPY TO PROGRAM, say), point `scraper query` at a role
that may only read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg

from scraper.errors import QueryError, StorageError
from scraper.store.base import CrawlCounts, CrawlRow, HostCount, Rows
from scraper.store.dialect import PRESETS_POSTGRES
from scraper.store.location import password_of, redact
from scraper.store.postgres.crawls import HELD
from scraper.store.postgres.database import CRAWL_LOCK, check_version, connect_options
from scraper.store.postgres.dialect import COUNT_QUERIES, HOST_SQL, counts_from
from scraper.store.postgres.errors import explain_pg
from scraper.store.postgres.schema import APPLICATION

Conn = psycopg.Connection[Any]
Params = Sequence[Any] | Mapping[str, Any]
STREAM_ROWS = 2000  # rows per round trip of a server-side cursor
# What a statement of `scraper query` may begin with: reads. Anything else is refused before it
# reaches the server (the read-only transaction would refuse most of it anyway).
READS = ("select", "with", "values", "table", "explain", "show", "(")


@contextlib.contextmanager
def open_pg_results(url: str) -> Iterator[PgResults]:
    """A read-only view of a scraper database on a PostgreSQL server, closed at the end."""
    location, secret = redact(url), password_of(url)
    try:
        conn = psycopg.connect(url, **connect_options(url))
    except psycopg.Error as exc:
        raise StorageError(
            f"{location}: cannot open the database: {explain_pg(exc, secret)}"
        ) from exc
    with contextlib.closing(conn):
        try:
            conn.read_only = True  # BEGIN READ ONLY
            conn.execute("SET default_transaction_read_only = on")  # and for the session
            conn.commit()
            _check_ours(conn, location)
        except psycopg.Error as exc:
            raise StorageError(
                f"{location}: cannot read the database: {explain_pg(exc, secret)}"
            ) from exc
        yield PgResults(conn, location, secret)


def _check_ours(conn: Conn, location: str) -> None:
    row = conn.execute(
        "SELECT to_regclass('scraper_schema') IS NOT NULL, "
        "(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'p', 'm'))"
    ).fetchone()
    assert row is not None
    ours, relations = row
    if not ours:
        if relations:
            raise StorageError(f"{location}: not a scraper database")
        raise StorageError(
            f"{location}: no such database (no scraper results here yet: crawl first, or pass --db)"
        )
    marks = conn.execute("SELECT application, version FROM scraper_schema").fetchall()
    if len(marks) != 1 or marks[0][0] != APPLICATION:
        raise StorageError(f"{location}: not a scraper database")
    check_version(int(marks[0][1]), location)


class PgResults:
    """`ResultsReader` (store/base.py) over a read-only psycopg connection."""

    def __init__(self, conn: Conn, location: str, secret: str | None) -> None:
        self._conn = conn
        self._location = location
        self._secret = secret
        self._cursors = 0

    @property
    def location(self) -> str:
        return self._location

    # One implicit transaction (read-only, READ COMMITTED: each statement sees what is committed
    # by then) for the reader's life, so a stream stays open while other reads run beside it.
    def _all(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _one(self, sql: str, params: Params = ()) -> tuple[Any, ...]:
        return self._all(sql, params)[0]

    def _stream(self, sql: str, params: Params = ()) -> Rows:
        """A server-side cursor: rows arrive STREAM_ROWS at a time, however many there are."""
        self._cursors += 1
        cursor = self._conn.cursor(name=f"scraper_rows_{self._cursors}")
        cursor.itersize = STREAM_ROWS
        try:
            cursor.execute(sql, params)
            first = cursor.fetchmany(STREAM_ROWS)
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        columns = [d.name for d in cursor.description or ()]

        def rows() -> Iterator[tuple[Any, ...]]:
            try:
                yield from itertools.chain(first, cursor)
            except psycopg.Error as exc:
                raise self._error(exc) from exc
            finally:
                with contextlib.suppress(psycopg.Error):
                    cursor.close()

        return Rows(columns, rows())

    def _error(self, exc: psycopg.Error) -> StorageError:
        with contextlib.suppress(psycopg.Error):
            self._conn.rollback()  # the transaction is aborted: the next read starts another
        return StorageError(f"{self._location}: cannot read: {explain_pg(exc, self._secret)}")

    def _running(self) -> set[int]:
        return {crawl_id for (crawl_id,) in self._all(HELD, (CRAWL_LOCK,))}

    def find_crawl(self, crawl_id: int | None = None) -> CrawlRow:
        """A crawl the table calls `running` that no process holds (see crawls.py) died: it is
        shown `interrupted`, ended with its last page."""
        crawl = self._crawl_row(crawl_id)
        if crawl is not None and crawl.status == "running" and crawl.id not in self._running():
            crawl = self._crawl_row(crawl.id)
            if crawl is not None and crawl.status == "running":
                (last,) = self._one(
                    "SELECT max(fetched_at) FROM pages WHERE crawl_id = %s", (crawl.id,)
                )
                ended = last or crawl.started_at
                crawl = dataclasses.replace(crawl, status="interrupted", finished_at=ended)
        if crawl is not None:
            return crawl
        first, last = self._one("SELECT min(id), max(id) FROM crawls")
        if first is None:
            raise StorageError("the database holds no crawl yet")
        known = f"{first}" if first == last else f"{first} to {last}"
        raise StorageError(f"--crawl {crawl_id}: no such crawl (this database has crawl {known})")

    def _crawl_row(self, crawl_id: int | None) -> CrawlRow | None:
        sql = "SELECT id, status, started_at, finished_at, duration_s, counters, seeds FROM crawls"
        if crawl_id is None:
            rows = self._all(f"{sql} ORDER BY id DESC LIMIT 1")
        else:
            rows = self._all(f"{sql} WHERE id = %s", (crawl_id,))
        return CrawlRow(*rows[0]) if rows else None

    def list_crawls(self) -> Rows:
        columns, rows = self._crawl_rows()
        running = {row[0] for row in rows if row[1] == "running"}
        if running - self._running():
            columns, rows = self._crawl_rows()
            held = self._running()
            rows = [
                (row[0], "interrupted", *row[2:])
                if row[0] in running and row[1] == "running" and row[0] not in held
                else row
                for row in rows
            ]
        return Rows(columns, iter(rows))

    def _crawl_rows(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        try:
            cursor = self._conn.execute(
                "SELECT c.id, c.status, c.started_at, c.finished_at, c.pages, c.errors, "
                "  (SELECT count(*) FROM frontier f WHERE f.crawl_id = c.id AND f.state < 2) "
                "  AS pending, c.duration_s, CASE WHEN c.seeds_count > "
                "  json_array_length(c.seeds::json) THEN c.seeds || ' (' || c.seeds_count "
                "  || ' seeds)' ELSE c.seeds END AS seeds FROM crawls c ORDER BY c.id"
            )
            return [d.name for d in cursor.description or ()], cursor.fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def counts(self, crawl_id: int) -> CrawlCounts:
        return counts_from(*(self._all(sql, (crawl_id,)) for sql in COUNT_QUERIES))

    def top_hosts(self, crawl_id: int, limit: int) -> list[HostCount]:
        rows = self._all(
            f"SELECT {HOST_SQL} AS host, count(*), count(error_kind) FROM pages "
            "WHERE crawl_id = %s GROUP BY host ORDER BY 2 DESC, host LIMIT %s",
            (crawl_id, limit),
        )
        return [HostCount(*row) for row in rows]

    def latencies(self, crawl_id: int) -> tuple[int, Iterator[float]]:
        where = "FROM pages WHERE crawl_id = %s AND elapsed_ms IS NOT NULL"
        (count,) = self._one(f"SELECT count(*) {where}", (crawl_id,))
        values = self._stream(f"SELECT elapsed_ms {where} ORDER BY elapsed_ms", (crawl_id,))
        return int(count), (value for (value,) in values.rows)

    def host_latencies(
        self, crawl_id: int, hosts: int
    ) -> tuple[dict[str, int], Iterator[tuple[str, float]]]:
        counts = {
            str(host): int(n)
            for host, n in self._all(
                f"SELECT {HOST_SQL} AS host, count(*) FROM pages "
                "WHERE crawl_id = %s AND elapsed_ms IS NOT NULL "
                "GROUP BY host ORDER BY 2 DESC, host LIMIT %s",
                (crawl_id, hosts),
            )
        }
        rows = self._stream(
            f"SELECT {HOST_SQL} AS host, elapsed_ms FROM pages "
            "WHERE crawl_id = %s AND elapsed_ms IS NOT NULL ORDER BY host, elapsed_ms",
            (crawl_id,),
        )
        return counts, ((host, ms) for host, ms in rows.rows)

    def fetch_span(self, crawl_id: int) -> float | None:
        (span,) = self._one(
            "SELECT extract(epoch FROM max(fetched_at::timestamptz) - min(fetched_at::timestamptz))"
            " FROM pages WHERE crawl_id = %s",
            (crawl_id,),
        )
        return None if span is None else float(span)

    def pages_per_bucket(self, crawl_id: int, width: float) -> dict[int, int]:
        rows = self._all(
            "SELECT floor(extract(epoch FROM fetched_at::timestamptz - (SELECT "
            "  min(fetched_at::timestamptz) FROM pages WHERE crawl_id = %(c)s)) / %(w)s)::int, "
            "count(*) FROM pages WHERE crawl_id = %(c)s GROUP BY 1",
            {"c": crawl_id, "w": width},
        )
        return {int(bucket): int(n) for bucket, n in rows}

    def status_counts(self, crawl_id: int) -> list[tuple[str, int]]:
        return [
            (str(status), int(n))
            for status, n in self._all(
                "SELECT coalesce(CAST(status AS TEXT), 'no response'), count(*) FROM pages "
                "WHERE crawl_id = %s GROUP BY status ORDER BY status IS NULL, status",
                (crawl_id,),
            )
        ]

    def depth_counts(self, crawl_id: int) -> list[tuple[int, int]]:
        return [
            (int(depth), int(n))
            for depth, n in self._all(
                "SELECT depth, count(*) FROM pages WHERE crawl_id = %s GROUP BY depth "
                "ORDER BY depth",
                (crawl_id,),
            )
        ]

    def errors_by_kind(self, crawl_id: int) -> list[tuple[str, int, str, str | None]]:
        # SQLite takes the bare column from the row holding max(url); DISTINCT ON says so here.
        rows = self._all(
            "SELECT k.error_kind, k.pages, e.url, e.error FROM ("
            "  SELECT error_kind, count(*) AS pages FROM pages "
            "  WHERE crawl_id = %(c)s AND error_kind IS NOT NULL GROUP BY error_kind) k "
            "JOIN (SELECT DISTINCT ON (error_kind) error_kind, url, error FROM pages "
            "  WHERE crawl_id = %(c)s AND error_kind IS NOT NULL "
            "  ORDER BY error_kind, url DESC) e ON e.error_kind = k.error_kind "
            "ORDER BY k.pages DESC, k.error_kind",
            {"c": crawl_id},
        )
        return [(str(kind), int(n), str(url), error) for kind, n, url, error in rows]

    def error_pages(self, crawl_id: int, limit: int) -> list[tuple[Any, ...]]:
        return self._all(
            "SELECT url, status, error_kind, error, referrer FROM pages "
            "WHERE crawl_id = %s AND error_kind IS NOT NULL ORDER BY error_kind, url LIMIT %s",
            (crawl_id, limit),
        )

    def pages(self, crawl_id: int | None) -> Rows:
        if crawl_id is None:
            return self._stream("SELECT * FROM pages ORDER BY id")
        return self._stream("SELECT * FROM pages WHERE crawl_id = %s ORDER BY id", (crawl_id,))

    def field_names(self, crawl_id: int | None) -> list[str]:
        where, params = ("AND crawl_id = %s", (crawl_id,)) if crawl_id is not None else ("", ())
        return [
            str(name)
            for (name,) in self._all(
                "SELECT DISTINCT j.key FROM pages, json_each(pages.fields::json) AS j "
                f"WHERE pages.fields IS NOT NULL {where} ORDER BY 1",
                params,
            )
        ]

    def seeds(self) -> list[str]:
        return [str(seeds) for (seeds,) in self._all("SELECT seeds FROM crawls")]

    def worker_shares(self, crawl_id: int) -> list[tuple[str, int, str]]:
        return [
            (str(worker), int(pages), str(status))
            for worker, pages, status in self._all(
                "SELECT id, pages, status FROM workers WHERE crawl_id = %s ORDER BY pages DESC, id",
                (crawl_id,),
            )
        ]

    def preset_sql(self, name: str, sql: str) -> str:
        return PRESETS_POSTGRES.get(name, sql)

    def run_query(self, sql: str, *, timeout: float | None = None) -> Rows:
        """Refused unless it begins as a read; then one statement, with the extended protocol,
        in a READ ONLY transaction, stopped by the server past `timeout` seconds (its
        statement_timeout, for this transaction only). Ctrl-C cancels it (psycopg sends the
        server a cancel request)."""
        if not sql.lstrip().lower().startswith(READS):
            raise QueryError("refused: `scraper query` only reads, and this statement writes")
        conn = self._conn
        try:
            conn.rollback()  # a transaction of its own, for its statement_timeout
            limit = "0" if timeout is None else f"{max(1, round(timeout * 1000))}ms"
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (limit,))
            # Binary results force the extended protocol: one statement, never a second one.
            cursor = conn.execute(sql.encode(), binary=True)
        except psycopg.Error as exc:
            raise self._query_error(exc, timeout) from exc
        columns = [d.name for d in cursor.description or ()]

        def rows() -> Iterator[tuple[Any, ...]]:
            try:
                yield from cursor
            except psycopg.Error as exc:
                raise self._query_error(exc, timeout) from exc

        return Rows(columns, rows())

    def _query_error(self, exc: psycopg.Error, timeout: float | None) -> BaseException:
        with contextlib.suppress(psycopg.Error):
            self._conn.rollback()
        if isinstance(exc, psycopg.errors.QueryCanceled):
            if timeout is not None:
                return QueryError(f"the query ran past --timeout {timeout:g} s; stopped")
            return KeyboardInterrupt()  # Ctrl-C: psycopg had the server cancel it
        refused = psycopg.errors.ReadOnlySqlTransaction | psycopg.errors.InsufficientPrivilege
        if isinstance(exc, refused):
            return QueryError("refused: `scraper query` only reads, and this statement writes")
        return QueryError(f"bad SQL: {explain_pg(exc)}")
