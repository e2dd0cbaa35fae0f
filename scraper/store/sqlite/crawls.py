"""Rows of the `crawls` table: start, resume, finish, list, and the summary of one crawl."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scraper.store.sqlite.database import Database

RESUMABLE = ("running", "interrupted", "failed")


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
    resumed: bool = False

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.duration_s if self.duration_s > 0 else 0.0


async def unfinished_crawl(db: Database, seeds: Sequence[str]) -> tuple[int, int | None]:
    """(the newest crawl of these seeds if it did not finish, else 0; the newest unfinished
    crawl of other seeds, if the newest crawl is one)."""
    same = await db.fetchall(
        "SELECT id, status FROM crawls WHERE seeds = ? ORDER BY id DESC LIMIT 1",
        (json.dumps(list(seeds)),),
    )
    mine = int(same[0][0]) if same and same[0][1] in RESUMABLE else 0
    newest = await db.fetchall("SELECT id, status FROM crawls ORDER BY id DESC LIMIT 1")
    other = int(newest[0][0]) if newest and newest[0][1] in RESUMABLE else None
    return mine, other if other != mine else None


# A crawl still `running` when another starts is one whose process died (kill -9, a second
# Ctrl-C, a crash): this one holds the database's lock, so nothing else is crawling it.
_DEAD_ARE_INTERRUPTED = "UPDATE crawls SET status = 'interrupted' WHERE status = 'running'"


async def start_crawl(db: Database, seeds: Sequence[str], config_json: str) -> int:
    async with db.transaction() as conn:
        await conn.execute(_DEAD_ARE_INTERRUPTED)
        cursor = await conn.execute(
            "INSERT INTO crawls (started_at, status, seeds, config) VALUES (?, 'running', ?, ?)",
            (now(), json.dumps(list(seeds)), config_json),
        )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


async def reopen_crawl(db: Database, crawl_id: int) -> None:
    async with db.transaction() as conn:
        await conn.execute(_DEAD_ARE_INTERRUPTED)
        await conn.execute(
            "UPDATE crawls SET status = 'running', finished_at = NULL WHERE id = ?", (crawl_id,)
        )


async def finish_crawl(
    db: Database,
    crawl_id: int,
    status: str,
    run_seconds: float,
    *,
    resumed: bool = False,
    extra: dict[str, Any] | None = None,
) -> CrawlSummary:
    """Record the crawl's end and counters (from the pages it stored) and return its summary."""
    by_status = {
        str(k): int(v)
        for k, v in await db.fetchall(
            "SELECT CASE WHEN status IS NULL THEN 'none' ELSE (status / 100) || 'xx' END, "
            "count(*) FROM pages WHERE crawl_id = ? GROUP BY 1 ORDER BY 1",
            (crawl_id,),
        )
    }
    by_error = {
        str(k): int(v)
        for k, v in await db.fetchall(
            "SELECT error_kind, count(*) FROM pages WHERE crawl_id = ? "
            "AND error_kind IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1",
            (crawl_id,),
        )
    }
    size = await db.scalar(
        "SELECT coalesce(sum(bytes), 0) FROM pages WHERE crawl_id = ?", (crawl_id,)
    )
    before = await db.scalar("SELECT coalesce(duration_s, 0) FROM crawls WHERE id = ?", (crawl_id,))
    summary = CrawlSummary(
        crawl_id=crawl_id,
        status=status,
        db=str(db.path),
        pages=sum(by_status.values()),
        errors=sum(by_error.values()),
        bytes=int(size),
        duration_s=round(float(before or 0) + run_seconds, 3),
        by_status=by_status,
        by_error=by_error,
        resumed=resumed,
    )
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE crawls SET finished_at = ?, status = ?, pages = ?, errors = ?, bytes = ?, "
            "duration_s = ?, counters = ? WHERE id = ?",
            (
                now(),
                status,
                summary.pages,
                summary.errors,
                summary.bytes,
                summary.duration_s,
                json.dumps({"by_status": by_status, "by_error": by_error, **(extra or {})}),
                crawl_id,
            ),
        )
    return summary


def list_crawls(
    conn: sqlite3.Connection, crawling: Callable[[], bool] = lambda: True
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """For `scraper crawls` (no event loop there): each crawl with its state and counters.

    A crawl the table still calls `running` may have died without recording its end (kill -9,
    a second Ctrl-C). `crawling` probes the database's lock after the table is read: if no
    process holds it, the table is read again (a crawl that ended meanwhile shows its end by
    then), and a row `running` both times is listed as `interrupted`."""
    columns, rows = _crawl_rows(conn)
    running = {row[0] for row in rows if row[1] == "running"}
    if not running or crawling():
        return columns, rows
    columns, rows = _crawl_rows(conn)
    return columns, [
        (row[0], "interrupted", *row[2:]) if row[0] in running and row[1] == "running" else row
        for row in rows
    ]


def _crawl_rows(conn: sqlite3.Connection) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = conn.execute(
        "SELECT c.id, c.status, c.started_at, c.finished_at, c.pages, c.errors, "
        "  (SELECT count(*) FROM frontier f WHERE f.crawl_id = c.id AND f.state < 2) AS pending, "
        "  c.duration_s, c.seeds FROM crawls c ORDER BY c.id"
    )
    return [d[0] for d in cursor.description], cursor.fetchall()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
