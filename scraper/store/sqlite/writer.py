"""The page writer in SQLite: a batch of pages, their items, the URLs they discovered and their own
done marks, in one transaction on the crawl's shared connection."""

from __future__ import annotations

import json
from collections.abc import Sequence

from scraper.models import PageRecord
from scraper.store.rows import PAGE_COLUMNS, item_rows, kept, page_row
from scraper.store.sqlite.database import Database
from scraper.store.sqlite.frontier import MARK_DONE, insert_discovered

UPSERT_PAGE = (
    f"INSERT INTO pages ({', '.join(PAGE_COLUMNS)}) VALUES ({', '.join('?' * len(PAGE_COLUMNS))}) "
    "ON CONFLICT(url) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in PAGE_COLUMNS[1:])
)
# 304 Not Modified: the stored page stands; only when and by which crawl it was checked changes.
TOUCH_NOT_MODIFIED = (
    "UPDATE pages SET crawl_id = ?, fetched_at = ?, elapsed_ms = ?, attempts = ?, "
    "not_modified = 1 WHERE url = ?"
)
TOUCH_FRESH = "UPDATE pages SET crawl_id = ? WHERE url = ?"
# A page's items, stored with it: once per crawl (the page's done mark, in the same transaction,
# keeps it from being stored again in the crawl; the key spares a repeat all the same).
INSERT_ITEMS = (
    "INSERT OR IGNORE INTO items (crawl_id, url, position, callback, data) VALUES (?, ?, ?, ?, ?)"
)


class SqlitePageWriter:
    """`PageWriter` (store/base.py) for one crawl."""

    def __init__(self, db: Database, crawl_id: int) -> None:
        self._db = db
        self._crawl_id = crawl_id

    async def write(self, records: Sequence[PageRecord]) -> None:
        crawl = self._crawl_id
        full = [r for r in records if not kept(r)]
        not_modified = [r.fetch for r in records if r.fetch.status == 304]
        fresh = [r.fetch.request.identity for r in records if r.fetch.request.fresh]
        items = item_rows(crawl, records)
        async with self._db.transaction() as conn:
            await conn.executemany(UPSERT_PAGE, [page_row(crawl, r) for r in full])
            await conn.executemany(
                TOUCH_NOT_MODIFIED,
                [
                    (crawl, f.fetched_at, f.elapsed_ms, f.attempts, f.request.identity)
                    for f in not_modified
                ],
            )
            await conn.executemany(TOUCH_FRESH, [(crawl, url) for url in fresh])
            await insert_discovered(conn, crawl, (c for r in records for c in r.children))
            if items:
                await conn.executemany(INSERT_ITEMS, items)
            await conn.executemany(MARK_DONE, [(crawl, r.fetch.request.identity) for r in records])

    async def links_from(self, url: str) -> list[str]:
        rows = await self._db.fetchall("SELECT links FROM pages WHERE url = ?", (url,))
        links: list[str] = json.loads(rows[0][0]) if rows and rows[0][0] else []
        return links
