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
from types import TracebackType
from typing import IO, Any, Self

import aiosqlite

from scraper.errors import StorageError, explain_sqlite

APPLICATION_ID = 0x53435250  # "SCRP"

SCHEMA_V1 = """
CREATE TABLE crawls (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL,
    seeds       TEXT NOT NULL,
    config      TEXT NOT NULL,
    pages       INTEGER NOT NULL DEFAULT 0,
    errors      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    duration_s  REAL,
    counters    TEXT
);
CREATE TABLE pages (
    id           INTEGER PRIMARY KEY,
    url          TEXT NOT NULL UNIQUE,
    crawl_id     INTEGER NOT NULL REFERENCES crawls(id),
    depth        INTEGER NOT NULL,
    referrer     TEXT,
    status       INTEGER,
    final_url    TEXT,
    redirects    TEXT,
    content_type TEXT,
    fetched_at   TEXT NOT NULL,
    elapsed_ms   REAL,
    bytes        INTEGER,
    attempts     INTEGER NOT NULL,
    encoding     TEXT,
    title        TEXT,
    description  TEXT,
    canonical    TEXT,
    text_length  INTEGER,
    text_hash    TEXT,
    text         TEXT,
    fields       TEXT,
    error_kind   TEXT,
    error        TEXT
);
CREATE INDEX pages_crawl ON pages(crawl_id);
CREATE INDEX pages_text_hash ON pages(text_hash);
CREATE TABLE links (
    from_url TEXT NOT NULL,
    to_url   TEXT NOT NULL,
    PRIMARY KEY (from_url, to_url)
) WITHOUT ROWID;
CREATE INDEX links_to ON links(to_url);
"""

# v2: the frontier lives in the database (resumable crawls), and pages keep their validators
# for conditional re-crawls. A v1 crawl still marked running died without a frontier to resume.
SCHEMA_V2 = """
CREATE TABLE frontier (
    seq       INTEGER PRIMARY KEY,      -- discovery order
    crawl_id  INTEGER NOT NULL REFERENCES crawls(id),
    url       TEXT NOT NULL,
    host      TEXT NOT NULL,
    depth     INTEGER NOT NULL,
    referrer  TEXT,
    state     INTEGER NOT NULL DEFAULT 0,   -- 0 pending, 1 leased (in flight), 2 done
    UNIQUE (crawl_id, url)
);
CREATE INDEX frontier_pending ON frontier(crawl_id, host, state, seq);
ALTER TABLE pages ADD COLUMN etag TEXT;
ALTER TABLE pages ADD COLUMN last_modified TEXT;
UPDATE crawls SET status = 'interrupted' WHERE status = 'running';
"""

# v3: a redirect is a row of its own (its target in final_url, its chain length in the frontier's
# hops), so the hop list goes; and a view
# names pages whose content another page already has, or that point to a canonical elsewhere.
SCHEMA_V3 = """
ALTER TABLE pages DROP COLUMN redirects;
ALTER TABLE frontier ADD COLUMN hops INTEGER NOT NULL DEFAULT 0;
CREATE VIEW duplicates AS
SELECT p.url AS url, o.url AS duplicate_of, 'same text' AS why
FROM pages p JOIN pages o ON o.id = (SELECT min(id) FROM pages WHERE text_hash = p.text_hash)
WHERE p.text_hash IS NOT NULL AND p.text_length > 0 AND o.id <> p.id
UNION ALL
SELECT url, canonical, 'rel=canonical' FROM pages
WHERE canonical IS NOT NULL AND canonical <> url;
"""

# v4: a page's outgoing links are a JSON array in its own row (`pages.links`), and `links` is a
# view of the same two columns as the table it replaces. The table cost two B-tree inserts per link
# (its key and the to_url index), ~45 per page: most of the sink's time and of the file's size.
SCHEMA_V4 = """
ALTER TABLE pages ADD COLUMN links TEXT;
UPDATE pages SET links = (SELECT json_group_array(to_url) FROM links WHERE from_url = pages.url)
WHERE url IN (SELECT from_url FROM links);
DROP TABLE links;
CREATE VIEW links AS
SELECT p.url AS from_url, j.value AS to_url FROM pages p, json_each(p.links) j
WHERE p.links IS NOT NULL;
"""

# v5: the visible text's hash changes definition (scraper/parse/text.py): XXH3-128 of the text
# nodes stripped and joined by one space, where it was BLAKE2b-128 of the text with every
# whitespace run collapsed. Both are 32 hex digits, and the old ones cannot be recomputed (the text
# is seldom stored), so they are marked: an old hash never equals a new one, while pages stored
# before the upgrade still match each other in `duplicates`. A page fetched again gets a new hash.
SCHEMA_V5_TEXT_HASH = """
UPDATE pages SET text_hash = 'blake2b:' || text_hash WHERE text_hash IS NOT NULL;
"""

MIGRATIONS: Sequence[str] = (SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5_TEXT_HASH)
SCHEMA_VERSION = len(MIGRATIONS)


class Database:
    """`async with Database(path) as db:` opens (creating or migrating) and closes the file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._lock_file: IO[str] | None = None

    async def __aenter__(self) -> Self:
        try:
            await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create its folder: {exc.strerror}") from None
        self._lock_file = await asyncio.to_thread(_lock_for_writing, self.path)
        try:
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
            await self._prepare(self._conn)
        except sqlite3.Error as exc:
            await self.close()
            raise StorageError(
                f"{self.path}: cannot open the database: {explain_sqlite(exc)}"
            ) from None
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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
                    raise StorageError(
                        f"{self.path}: cannot write: {explain_sqlite(exc)}"
                    ) from None
                raise

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.OperationalError):  # nothing had begun, or committed
            await self.conn.execute("ROLLBACK")

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock:
            try:
                return list(await self.conn.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: cannot read: {explain_sqlite(exc)}") from None

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
        ) from None
    if not _take(handle, fcntl.LOCK_EX, patience=LOCK_PATIENCE):
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StorageError(
            f"{path}: another crawl is writing to it (pid {holder}); wait for it or stop it"
        ) from None
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
