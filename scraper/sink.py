"""The sink: PageRecords → SQLite, in batches, from one task that owns one aiosqlite connection.

`Sink` is the seam another backend (PostgreSQL) stands in for. `SqliteSink` writes one transaction
per `storage.batch_size` records or per `storage.flush_interval` seconds, whichever comes first, in
WAL mode so readers (`scraper query`) never block the crawl. A batch interrupted by cancellation is
finished before the task gives up, so a Ctrl-C never leaves half a batch.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import aiosqlite

from .config import StorageConfig
from .errors import StorageError, explain_sqlite
from .models import PageRecord

SCHEMA_VERSION = 1
APPLICATION_ID = 0x53435250  # "SCRP": marks a database as ours, so we never write into another's

SCHEMA = """
CREATE TABLE IF NOT EXISTS crawls (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL,          -- running | finished | interrupted | failed
    seeds       TEXT NOT NULL,          -- JSON array
    config      TEXT NOT NULL,          -- JSON of the whole effective configuration
    pages       INTEGER NOT NULL DEFAULT 0,
    errors      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    duration_s  REAL,
    counters    TEXT                    -- JSON: pages by status class, errors by kind
);
CREATE TABLE IF NOT EXISTS pages (
    id           INTEGER PRIMARY KEY,
    url          TEXT NOT NULL UNIQUE,  -- canonical URL as requested
    crawl_id     INTEGER NOT NULL REFERENCES crawls(id),
    depth        INTEGER NOT NULL,
    referrer     TEXT,
    status       INTEGER,               -- HTTP status; NULL when no response
    final_url    TEXT,                  -- after redirects
    redirects    TEXT,                  -- JSON array of the hops before final_url
    content_type TEXT,
    fetched_at   TEXT NOT NULL,         -- ISO 8601, UTC
    elapsed_ms   REAL,                  -- of the last attempt
    bytes        INTEGER,
    attempts     INTEGER NOT NULL,
    encoding     TEXT,
    title        TEXT,
    description  TEXT,
    canonical    TEXT,
    text_length  INTEGER,
    text_hash    TEXT,
    text         TEXT,                  -- only with parse.store_text = true
    fields       TEXT,                  -- JSON object of the [extract] rules' values
    error_kind   TEXT,                  -- NULL on success; see the README for the kinds
    error        TEXT
);
CREATE INDEX IF NOT EXISTS pages_crawl ON pages(crawl_id);
CREATE INDEX IF NOT EXISTS pages_text_hash ON pages(text_hash);
CREATE TABLE IF NOT EXISTS links (
    from_url TEXT NOT NULL,
    to_url   TEXT NOT NULL,
    PRIMARY KEY (from_url, to_url)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS links_to ON links(to_url);
"""

PAGE_COLUMNS = [
    "url",
    "crawl_id",
    "depth",
    "referrer",
    "status",
    "final_url",
    "redirects",
    "content_type",
    "fetched_at",
    "elapsed_ms",
    "bytes",
    "attempts",
    "encoding",
    "title",
    "description",
    "canonical",
    "text_length",
    "text_hash",
    "text",
    "fields",
    "error_kind",
    "error",
]
UPSERT_PAGE = (
    f"INSERT INTO pages ({', '.join(PAGE_COLUMNS)}) VALUES ({', '.join('?' * len(PAGE_COLUMNS))}) "
    f"ON CONFLICT(url) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in PAGE_COLUMNS[1:])
)


@dataclass(frozen=True, slots=True)
class CrawlSummary:
    """A finished (or interrupted) crawl, as the database tells it."""

    crawl_id: int
    status: str
    db: str
    pages: int
    errors: int
    bytes: int
    duration_s: float
    by_status: dict[str, int] = field(default_factory=dict)
    by_error: dict[str, int] = field(default_factory=dict)

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.duration_s if self.duration_s > 0 else 0.0


class Sink(Protocol):
    async def start_crawl(self, seeds: Sequence[str], config_json: str) -> int: ...

    async def consume(self, queue: asyncio.Queue[PageRecord | None]) -> None:
        """Store records from `queue` until it yields None."""
        ...

    async def finish_crawl(self, status: str) -> CrawlSummary: ...


class SqliteSink:
    def __init__(self, config: StorageConfig) -> None:
        self._config = config
        self._path = Path(config.db)
        self._db: aiosqlite.Connection | None = None
        self._crawl_id: int | None = None
        self._started = 0.0
        self.written = 0

    async def __aenter__(self) -> Self:
        try:
            await asyncio.to_thread(self._path.parent.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self._path}: cannot create its folder: {exc.strerror}") from None
        try:
            self._db = await aiosqlite.connect(self._path, isolation_level=None)
            await self._prepare(self._db)
        except sqlite3.Error as exc:
            await self._close()
            raise StorageError(
                f"{self._path}: cannot open the database: {explain_sqlite(exc)}"
            ) from None
        except StorageError:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def _prepare(self, db: aiosqlite.Connection) -> None:
        app_id = await _scalar(db, "PRAGMA application_id")
        version = await _scalar(db, "PRAGMA user_version")
        tables = await _scalar(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table'")
        if tables and app_id != APPLICATION_ID:
            raise StorageError(
                f"{self._path}: not a scraper database (it holds other tables); "
                "choose another storage.db"
            )
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self._path}: written by a newer scraper (schema {version}, "
                f"this one knows {SCHEMA_VERSION}); upgrade scraper"
            )
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.executescript(
            f"BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; "
            f"PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        )

    async def start_crawl(self, seeds: Sequence[str], config_json: str) -> int:
        db = self._require_db()
        self._started = asyncio.get_running_loop().time()
        cursor = await db.execute(
            "INSERT INTO crawls (started_at, status, seeds, config) VALUES (?, 'running', ?, ?)",
            (_now(), json.dumps(list(seeds)), config_json),
        )
        self._crawl_id = cursor.lastrowid
        assert self._crawl_id is not None
        return self._crawl_id

    async def consume(self, queue: asyncio.Queue[PageRecord | None]) -> None:
        loop = asyncio.get_running_loop()
        batch: list[PageRecord] = []
        deadline = 0.0
        ended = False
        try:
            while not ended:
                try:
                    async with asyncio.timeout_at(deadline if batch else None):
                        record = await queue.get()
                except TimeoutError:
                    await self._flush(batch)
                    continue
                if record is None:
                    break
                if not batch:
                    deadline = loop.time() + self._config.flush_interval
                batch.append(record)
                while len(batch) < self._config.batch_size and not queue.empty():
                    more = queue.get_nowait()
                    if more is None:
                        ended = True
                        break
                    batch.append(more)
                if len(batch) >= self._config.batch_size:
                    await self._flush(batch)
            await self._flush(batch)
        except asyncio.CancelledError:
            # Keep what reached us: store the batch and whatever is already queued, then stop.
            while not queue.empty():
                if (record := queue.get_nowait()) is not None:
                    batch.append(record)
            await self._flush(batch)
            raise

    async def _flush(self, batch: list[PageRecord]) -> None:
        if not batch:
            return
        rows = list(batch)
        batch.clear()
        write = asyncio.ensure_future(self._write(rows))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await write  # finish the transaction already begun, then go on being cancelled
            raise

    async def _write(self, records: list[PageRecord]) -> None:
        db = self._require_db()
        pages = [_page_row(self._crawl_id, record) for record in records]
        sources = [(record.fetch.request.url,) for record in records]
        links = [
            (record.fetch.request.url, to_url)
            for record in records
            if record.parsed is not None
            for to_url in record.parsed.links
        ]
        try:
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(UPSERT_PAGE, pages)
            await db.executemany("DELETE FROM links WHERE from_url = ?", sources)
            await db.executemany("INSERT OR IGNORE INTO links VALUES (?, ?)", links)
            await db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            raise StorageError(f"{self._path}: cannot write: {explain_sqlite(exc)}") from None
        self.written += len(records)

    async def finish_crawl(self, status: str) -> CrawlSummary:
        db = self._require_db()
        crawl_id = self._crawl_id
        duration = asyncio.get_running_loop().time() - self._started
        by_status = dict(
            await db.execute_fetchall(
                "SELECT CASE WHEN status IS NULL THEN 'none' ELSE (status / 100) || 'xx' END, "
                "count(*) FROM pages WHERE crawl_id = ? GROUP BY 1 ORDER BY 1",
                (crawl_id,),
            )
        )
        by_error = dict(
            await db.execute_fetchall(
                "SELECT error_kind, count(*) FROM pages WHERE crawl_id = ? "
                "AND error_kind IS NOT NULL GROUP BY 1 ORDER BY 2 DESC",
                (crawl_id,),
            )
        )
        summary = CrawlSummary(
            crawl_id=crawl_id or 0,
            status=status,
            db=str(self._path),
            pages=sum(by_status.values()),
            errors=sum(by_error.values()),
            bytes=await _scalar(
                db, "SELECT coalesce(sum(bytes), 0) FROM pages WHERE crawl_id = ?", (crawl_id,)
            ),
            duration_s=round(duration, 3),
            by_status=by_status,
            by_error=by_error,
        )
        await db.execute(
            "UPDATE crawls SET finished_at = ?, status = ?, pages = ?, errors = ?, bytes = ?, "
            "duration_s = ?, counters = ? WHERE id = ?",
            (
                _now(),
                status,
                summary.pages,
                summary.errors,
                summary.bytes,
                summary.duration_s,
                json.dumps({"by_status": by_status, "by_error": by_error}),
                crawl_id,
            ),
        )
        return summary

    def _require_db(self) -> aiosqlite.Connection:
        assert self._db is not None, "SqliteSink used outside `async with`"
        return self._db


def _page_row(crawl_id: int | None, record: PageRecord) -> tuple[Any, ...]:
    fetch, parsed = record.fetch, record.parsed
    error_kind, error = fetch.error_kind, fetch.error
    if record.parse_error is not None:
        error_kind, error = "parse", record.parse_error
    return (
        fetch.request.url,
        crawl_id,
        fetch.request.depth,
        fetch.request.referrer,
        fetch.status,
        fetch.final_url,
        json.dumps(list(fetch.redirects)) if fetch.redirects else None,
        fetch.content_type,
        fetch.fetched_at,
        fetch.elapsed_ms,
        fetch.bytes,
        fetch.attempts,
        parsed.encoding if parsed else None,
        parsed.title if parsed else None,
        parsed.description if parsed else None,
        parsed.canonical if parsed else None,
        parsed.text_length if parsed else None,
        parsed.text_hash if parsed else None,
        parsed.text if parsed else None,
        json.dumps(parsed.fields, ensure_ascii=False) if parsed and parsed.fields else None,
        error_kind,
        error,
    )


async def _scalar(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    rows = list(await db.execute_fetchall(sql, params))
    return rows[0][0] if rows else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
