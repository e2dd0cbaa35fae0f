"""Read-only access to a SQLite results database, for the commands that run after (or beside) a
crawl: query, stats, export, report, crawls. The queries are the reader's (store/reader.py);
this is SQLite's side of it.

These run at the CLI's edge with no event loop, so plain sqlite3 is the right tool. The file is
opened read-only (a crawl may be writing it: WAL lets both go on) and must be one of ours.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from scraper.errors import QueryError, StorageError
from scraper.store.base import Rows
from scraper.store.dialect import SQLITE
from scraper.store.reader import Reader
from scraper.store.sqlite.database import crawl_in_progress
from scraper.store.sqlite.errors import explain_sqlite
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
def open_sqlite_results(db_path: str | Path) -> Iterator[Reader]:
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
        with contextlib.closing(Reader(SqliteConnection(conn, path))) as reader:
            yield reader


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


class SqliteConnection:
    """The reader's `Connection` (store/reader.py) over a read-only sqlite3 connection."""

    dialect = SQLITE
    errors = sqlite3.Error

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._path = path

    @property
    def location(self) -> str:
        return str(self._path)

    def cursor(self, *, stream: bool = False) -> sqlite3.Cursor:
        return self._conn.cursor()  # SQLite steps through rows as they are asked for

    def failed(self, exc: Exception) -> StorageError:
        assert isinstance(exc, sqlite3.Error)
        return StorageError(f"{self._path}: cannot read: {explain_sqlite(exc)}")

    def held(self, crawl_ids: Collection[int]) -> set[int]:
        """One crawl process at a time holds the database's lock: it holds its crawl, and any
        other `running` is one that died."""
        return set(crawl_ids) if crawl_in_progress(self._path) else set()

    def run_query(self, sql: str, *, timeout: float | None) -> Rows:
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
