"""The results database: schema, migrations, and the one connection the crawl shares.

The sink (pages, links, discovered URLs) and the frontier (refills, leases) both use one aiosqlite
connection; `transaction()` holds a lock so the statements of the two never interleave. A database
records its schema version (`PRAGMA user_version`) and is marked as ours (`PRAGMA application_id`):
an older one is migrated, a newer or foreign one is refused before anything is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import aiosqlite

from scraper.errors import StorageError
from scraper.store.opened import Opened
from scraper.store.sqlite.errors import explain_sqlite
from scraper.store.sqlite.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION


class Database(Opened):
    """`async with Database(path) as db:` opens (creating or migrating) and closes the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._lock_file: IO[str] | None = None

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create its folder: {exc.strerror}") from exc
        self._lock_file = await asyncio.to_thread(_lock_for_writing, self.path)
        try:
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
            await self._prepare(self._conn)
        except sqlite3.Error as exc:
            raise StorageError(
                f"{self.path}: cannot open the database: {explain_sqlite(exc)}"
            ) from exc

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
        if self._lock_file is not None:
            lock, self._lock_file = self._lock_file, None
            await asyncio.to_thread(lock.close)  # closing releases the lock

    async def _prepare(self, conn: aiosqlite.Connection) -> None:
        app_id = await _scalar(conn, "PRAGMA application_id")
        version = await _scalar(conn, "PRAGMA user_version")
        tables = await _scalar(conn, "SELECT count(*) FROM sqlite_master WHERE type = 'table'")
        if tables and app_id != APPLICATION_ID:
            raise StorageError(
                f"{self.path}: not a scraper database (it holds other tables); "
                "choose another storage.db"
            )
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path}: written by a newer scraper (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade scraper"
            )
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = NORMAL")
        await conn.execute("PRAGMA busy_timeout = 5000")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # One transaction per step: a failed migration leaves the previous version intact.
            await conn.executescript(
                f"BEGIN; {script}; PRAGMA application_id = {APPLICATION_ID}; "
                f"PRAGMA user_version = {number}; COMMIT;"
            )

    @property
    def conn(self) -> aiosqlite.Connection:
        assert self._conn is not None, "Database used outside `async with`"
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT under the lock; a database error becomes a StorageError."""
        async with self._lock:
            conn = self.conn
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.execute("COMMIT")
            except BaseException as exc:
                # Always roll back, even when cancelled: a statement whose await was cancelled
                # still runs on aiosqlite's thread, and the ROLLBACK queued behind it undoes it.
                rollback = asyncio.ensure_future(self._rollback())
                try:
                    await asyncio.shield(rollback)
                except asyncio.CancelledError:
                    await rollback
                    raise
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"{self.path}: cannot write: {explain_sqlite(exc)}") from exc
                raise

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.OperationalError):  # nothing had begun, or committed
            await self.conn.execute("ROLLBACK")

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            try:
                return list(await self.conn.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: cannot read: {explain_sqlite(exc)}") from exc

    async def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self.fetchall(sql, params)
        return rows[0][0] if rows else None


def _lock_for_writing(path: Path) -> IO[str]:
    """Hold `<db>.lock` for the crawl: two crawls writing one database would share its frontier.
    An flock, so a crawl that dies (kill -9 included) releases it with its process."""
    full = path.resolve()
    lock_path = full.with_name(full.name + ".lock")
    try:
        handle = lock_path.open("a+")
    except OSError as exc:
        raise StorageError(
            f"{path}: cannot write: the file or its folder is read-only "
            f"({exc.strerror} creating {lock_path.name})"
        ) from exc
    if not _take(handle, fcntl.LOCK_EX, patience=LOCK_PATIENCE):
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StorageError(
            f"{path}: another crawl is writing to it (pid {holder}); wait for it or stop it"
        )
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


LOCK_PATIENCE = 1.0  # seconds a starting crawl retries the lock (a probe may hold it briefly)


def _take(handle: IO[str], kind: int, *, patience: float) -> bool:
    """flock `handle`, retrying for `patience` seconds (in a thread, never on the loop)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(handle, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def crawl_in_progress(path: Path) -> bool:
    """Is a crawl writing to the database at `path` now (holding `<db>.lock`)? For the commands
    that only read, at the CLI's edge: a flock probe that never waits, no event loop. Its shared
    lock lasts microseconds; a crawl starting meanwhile retries (LOCK_PATIENCE)."""
    full = path.resolve()
    try:
        handle = full.with_name(full.name + ".lock").open()
    except FileNotFoundError:
        return False  # never crawled here (or copied without it): nobody crawls it
    except OSError:
        return True  # cannot tell: better "running" than a live crawl called interrupted
    with handle:
        return not _take(handle, fcntl.LOCK_SH, patience=0)  # closing releases the probe's lock


async def _scalar(conn: aiosqlite.Connection, sql: str) -> Any:
    rows = list(await conn.execute_fetchall(sql))
    return rows[0][0] if rows else None
