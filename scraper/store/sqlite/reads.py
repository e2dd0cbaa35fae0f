"""Read-only access to a results database, for the commands that run after (or beside) a crawl:
query, stats, export, report.

These run at the CLI's edge with no event loop, so plain sqlite3 is the right tool. The file is
opened read-only (a crawl may be writing it: WAL lets both go on) and must be one of ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scraper.errors import StorageError, explain_sqlite
from scraper.store.sqlite.database import APPLICATION_ID


@dataclass(frozen=True, slots=True)
class CrawlRow:
    """One row of the crawls table."""

    id: int
    status: str
    started_at: str
    finished_at: str | None
    duration_s: float | None
    counters: str | None = None  # JSON written at the crawl's end


@contextlib.contextmanager
def open_results(db_path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to a scraper database, closed at the end of the block."""
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
        yield conn


class _NeedsWrite(Exception):
    pass


def _connect(path: Path, *, immutable: bool = False) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        return sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot open the database: {explain_sqlite(exc)}") from None


def _application_id(conn: sqlite3.Connection, path: Path) -> int:
    try:
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    except sqlite3.OperationalError as exc:
        if "readonly" in str(exc):
            raise _NeedsWrite from None
        conn.close()
        raise StorageError(f"{path}: cannot read the database: {explain_sqlite(exc)}") from None
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"{path}: cannot read the database: {explain_sqlite(exc)}") from None
    return int(app_id)


def find_crawl(
    conn: sqlite3.Connection,
    crawl_id: int | None = None,
    crawling: Callable[[], bool] = lambda: True,
) -> CrawlRow:
    """The crawl `crawl_id`, or the latest one; a StorageError names the ones there are.

    If the table says `running`, `crawling` probes the database's lock: with no process
    holding it, the row is read again (a crawl that ended meanwhile shows its end by then),
    and one still `running` died without recording its end: it is `interrupted`."""
    crawl = _crawl_row(conn, crawl_id)
    if crawl is not None and crawl.status == "running" and not crawling():
        crawl = _crawl_row(conn, crawl.id)
        if crawl is not None and crawl.status == "running":
            # It ended with its last page (not now: its duration must not grow with the clock).
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


def _crawl_row(conn: sqlite3.Connection, crawl_id: int | None) -> CrawlRow | None:
    sql = "SELECT id, status, started_at, finished_at, duration_s, counters FROM crawls"
    if crawl_id is None:
        row = conn.execute(f"{sql} ORDER BY id DESC LIMIT 1").fetchone()
    else:
        row = conn.execute(f"{sql} WHERE id = ?", (crawl_id,)).fetchone()
    return CrawlRow(*row) if row is not None else None
