"""The page writer in PostgreSQL: a batch of pages, the URLs they discovered and their own done
marks, in one transaction on the backend's `write` connection.

Pages go by executemany, which psycopg pipelines (one round trip for the batch); they are sorted
by URL so two processes upserting overlapping batches lock rows in one order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from scraper.models import PageRecord
from scraper.store.postgres.database import Conn, PgDatabase
from scraper.store.postgres.frontier import MARK_DONE, insert_discovered
from scraper.store.rows import PAGE_COLUMNS, item_rows, kept, page_row

UPSERT_PAGE = (
    f"INSERT INTO pages ({', '.join(PAGE_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(PAGE_COLUMNS))}) "
    "ON CONFLICT ((md5(url))) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in PAGE_COLUMNS[1:])
)
BY_URL = "md5(url) = md5(%(url)s) AND url = %(url)s"
TOUCH_NOT_MODIFIED = (
    "UPDATE pages SET crawl_id = %(crawl)s, fetched_at = %(at)s, elapsed_ms = %(ms)s, "
    f"attempts = %(attempts)s, not_modified = 1 WHERE {BY_URL}"
)
TOUCH_FRESH = f"UPDATE pages SET crawl_id = %(crawl)s WHERE {BY_URL}"
# A page's items, stored with it, once per crawl (see the SQLite writer).
INSERT_ITEMS = (
    "INSERT INTO items (crawl_id, url, position, callback, data) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT DO NOTHING"
)


class PgPageWriter:
    """`PageWriter` (store/base.py) for one crawl."""

    def __init__(self, db: PgDatabase, crawl_id: int, worker: str) -> None:
        self._db = db
        self._crawl_id = crawl_id
        self._worker = worker

    async def write(self, records: Sequence[PageRecord]) -> None:
        crawl = self._crawl_id
        # The last record of a URL wins, as it would on SQLite (one statement per row there).
        full = {r.fetch.request.identity: r for r in records if not kept(r)}
        not_modified = [r.fetch for r in records if r.fetch.status == 304]
        fresh = [r.fetch.request.identity for r in records if r.fetch.request.fresh]
        own = sorted({r.fetch.request.identity for r in records})
        items = sorted(item_rows(crawl, records))

        async def work(conn: Conn) -> None:
            cursor = conn.cursor()
            # The discoveries first: they take their hosts' rows, which come before all else
            # in every transaction's lock order (leases.py).
            await insert_discovered(conn, crawl, (c for r in records for c in r.children))
            rows = [page_row(crawl, full[url]) for url in sorted(full)]
            if rows:
                await cursor.executemany(UPSERT_PAGE, rows)
            if not_modified:
                await cursor.executemany(
                    TOUCH_NOT_MODIFIED,
                    [
                        {
                            "crawl": crawl,
                            "at": f.fetched_at,
                            "ms": f.elapsed_ms,
                            "attempts": f.attempts,
                            "url": f.request.identity,
                        }
                        for f in not_modified
                    ],
                )
            if fresh:
                await cursor.executemany(
                    TOUCH_FRESH, [{"crawl": crawl, "url": url} for url in sorted(fresh)]
                )
            if items:
                await cursor.executemany(INSERT_ITEMS, items)
            await cursor.execute(MARK_DONE, (own, crawl))
            await cursor.execute(
                "UPDATE workers SET pages = pages + %s WHERE crawl_id = %s AND id = %s",
                (len(records), crawl, self._worker),
            )

        await self._db.run(work, label="sink")

    async def links_from(self, url: str) -> list[str]:
        rows = await self._db.fetchall(f"SELECT links FROM pages WHERE {BY_URL}", {"url": url})
        links: list[str] = json.loads(rows[0][0]) if rows and rows[0][0] else []
        return links
