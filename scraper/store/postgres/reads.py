"""Read-only access to a PostgreSQL results database, for the commands that run after (or beside)
a crawl: query, stats, export, report, crawls. The queries are the reader's (store/reader.py);
this is PostgreSQL's side of it.

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
from collections.abc import Collection, Iterator
from typing import Any

import psycopg

from scraper.errors import QueryError, StorageError
from scraper.store.base import Rows
from scraper.store.dialect import POSTGRES
from scraper.store.location import password_of, redact
from scraper.store.postgres.crawls import HELD
from scraper.store.postgres.database import CRAWL_LOCK, check_version, connect_options
from scraper.store.postgres.errors import explain_pg
from scraper.store.postgres.schema import APPLICATION
from scraper.store.reader import STREAM_ROWS, Cursor, Reader

Conn = psycopg.Connection[Any]
# What a statement of `scraper query` may begin with: reads. Anything else is refused before it
# reaches the server (the read-only transaction would refuse most of it anyway).
READS = ("select", "with", "values", "table", "explain", "show", "(")


@contextlib.contextmanager
def open_pg_results(url: str) -> Iterator[Reader]:
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
        with contextlib.closing(Reader(PgConnection(conn, location, secret))) as reader:
            yield reader


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


class PgConnection:
    """The reader's `Connection` (store/reader.py) over a read-only psycopg connection.

    One implicit transaction (read-only, READ COMMITTED: each statement sees what is committed
    by then) for the reader's life, so a stream stays open while other reads run beside it."""

    dialect = POSTGRES
    errors = psycopg.Error

    def __init__(self, conn: Conn, location: str, secret: str | None) -> None:
        self._conn = conn
        self._location = location
        self._secret = secret
        self._cursors = 0

    @property
    def location(self) -> str:
        return self._location

    def cursor(self, *, stream: bool = False) -> Cursor:
        if not stream:
            return self._conn.cursor()
        # A server-side cursor: the server keeps the result, and sends it a batch at a time.
        self._cursors += 1
        cursor = self._conn.cursor(name=f"scraper_rows_{self._cursors}")
        cursor.itersize = STREAM_ROWS
        return cursor

    def failed(self, exc: Exception) -> StorageError:
        assert isinstance(exc, psycopg.Error)
        with contextlib.suppress(psycopg.Error):
            self._conn.rollback()  # the transaction is aborted: the next read starts another
        return StorageError(f"{self._location}: cannot read: {explain_pg(exc, self._secret)}")

    def held(self, crawl_ids: Collection[int]) -> set[int]:
        """The crawls whose advisory lock some process holds (see crawls.py)."""
        try:
            rows = self._conn.execute(HELD, (CRAWL_LOCK,)).fetchall()
        except psycopg.Error as exc:
            raise self.failed(exc) from exc
        return {int(crawl_id) for (crawl_id,) in rows} & set(crawl_ids)

    def run_query(self, sql: str, *, timeout: float | None) -> Rows:
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
