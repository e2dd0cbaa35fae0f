"""The page writer in SQLite: a batch of pages, the URLs they discovered and their own done marks,
in one transaction on the crawl's shared connection."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from scraper.models import PageRecord
from scraper.store.sqlite.database import Database
from scraper.store.sqlite.frontier import MARK_DONE, insert_discovered

PAGE_COLUMNS = [
    "url", "crawl_id", "depth", "referrer", "status", "final_url", "content_type",
    "fetched_at", "elapsed_ms", "bytes", "attempts", "encoding", "title", "description",
    "canonical", "text_length", "text_hash", "text", "fields", "error_kind", "error", "etag",
    "last_modified", "links", "links_cut",
]  # fmt: skip
UPSERT_PAGE = (
    f"INSERT INTO pages ({', '.join(PAGE_COLUMNS)}) VALUES ({', '.join('?' * len(PAGE_COLUMNS))}) "
    "ON CONFLICT(url) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in PAGE_COLUMNS[1:])
)
# 304 Not Modified: the stored page stands; only when and by which crawl it was checked changes.
TOUCH_NOT_MODIFIED = (
    "UPDATE pages SET crawl_id = ?, fetched_at = ?, elapsed_ms = ?, attempts = ? WHERE url = ?"
)
TOUCH_FRESH = "UPDATE pages SET crawl_id = ? WHERE url = ?"


class SqlitePageWriter:
    """`PageWriter` (store/base.py) for one crawl."""

    def __init__(self, db: Database, crawl_id: int) -> None:
        self._db = db
        self._crawl_id = crawl_id

    async def write(self, records: Sequence[PageRecord]) -> None:
        crawl = self._crawl_id
        full = [r for r in records if not kept(r)]
        not_modified = [r.fetch for r in records if r.fetch.status == 304]
        fresh = [r.fetch.request.url for r in records if r.fetch.request.fresh]
        async with self._db.transaction() as conn:
            await conn.executemany(UPSERT_PAGE, [page_row(crawl, r) for r in full])
            await conn.executemany(
                TOUCH_NOT_MODIFIED,
                [
                    (crawl, f.fetched_at, f.elapsed_ms, f.attempts, f.request.url)
                    for f in not_modified
                ],
            )
            await conn.executemany(TOUCH_FRESH, [(crawl, url) for url in fresh])
            await insert_discovered(conn, crawl, (c for r in records for c in r.children))
            await conn.executemany(MARK_DONE, [(crawl, r.fetch.request.url) for r in records])

    async def links_from(self, url: str) -> list[str]:
        rows = await self._db.fetchall("SELECT links FROM pages WHERE url = ?", (url,))
        links: list[str] = json.loads(rows[0][0]) if rows and rows[0][0] else []
        return links


def kept(record: PageRecord) -> bool:
    """The stored row stands: a 304, or a page fresher than crawl.recrawl_after."""
    return record.fetch.status == 304 or record.fetch.request.fresh


def page_row(crawl_id: int, record: PageRecord) -> tuple[Any, ...]:
    """A record as the values of PAGE_COLUMNS (a parse failure is the page's error)."""
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
        parsed.fields_json if parsed else None,
        error_kind,
        error,
        fetch.etag,
        fetch.last_modified,
        parsed.links_json if parsed else None,
        parsed.links_cut if parsed else None,
    )
