"""The page writer in PostgreSQL: a batch of pages, the URLs they discovered and their own done
marks, in one transaction on the backend's `write` connection.

Pages go by executemany, which psycopg pipelines (one round trip for the batch); they are sorted
by URL so two processes upserting overlapping batches lock rows in one order.

After an outage (database.py) the writer finds out what became of its batches instead of
guessing: a batch cut mid-transaction, and those committed in the last RECHECK seconds (with
synchronous_commit off a server that crashes, `pg_ctl stop -m immediate` included, loses its
last fraction of a second of commits, each whole), are looked up by their pages' done marks in
the frontier. A batch whose marks are there committed; one whose marks are not is written again.
Records of hosts whose lease was lost meanwhile (`void`, leases.py) are dropped, not written:
their URLs went back to pending, for the hosts' new owners.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence

from scraper.errors import DatabaseBack
from scraper.models import PageRecord
from scraper.store.postgres.database import Conn, PgDatabase
from scraper.store.postgres.frontier import DONE, MARK_DONE, insert_discovered
from scraper.store.postgres.outage import RECHECK
from scraper.store.rows import PAGE_COLUMNS, item_rows, kept, page_row
from scraper.urls import host_key

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
# Which of these requests of the crawl are done (their batch committed), by identity: a
# frontier row's `url` is its request's identity (models.py), as MARK_DONE's are.
DONE_OF = (
    "SELECT f.url FROM frontier f JOIN unnest(%s::text[]) AS u(url) "
    f"ON md5(f.url) = md5(u.url) AND f.url = u.url WHERE f.crawl_id = %s AND f.state = {DONE}"
)


class PgPageWriter:
    """`PageWriter` (store/base.py) for one crawl."""

    def __init__(
        self, db: PgDatabase, crawl_id: int, worker: str, void: set[str] | None = None
    ) -> None:
        self._db = db
        self._crawl_id = crawl_id
        self._worker = worker
        self._void = set() if void is None else void  # shared with the host leases
        self._recent: deque[tuple[float, list[PageRecord]]] = deque()  # (committed at, batch)
        self._outages_seen = 0

    async def write(self, records: Sequence[PageRecord]) -> Sequence[PageRecord]:
        """Write the batch; the records dropped instead (their host's lease was lost while
        the database was away)."""
        if self._db.outages != self._outages_seen:
            await self._recheck()
        dropped, batch = self._sort_out(records)
        await self._store(batch, dropped)
        return dropped

    async def _store(self, batch: list[PageRecord], dropped: list[PageRecord]) -> None:
        """Write `batch`, finding out after an outage whether it committed (the records of
        hosts lost meanwhile go to `dropped`); kept a while, to be looked up after the next."""
        while batch:
            try:
                await self._write(batch)
                break
            except DatabaseBack:
                await self._recheck()  # (the batches before this one first)
                more, batch = self._sort_out(batch)
                dropped.extend(more)
                if batch and await self._committed(batch):
                    break
        now = asyncio.get_running_loop().time()
        if batch:
            self._recent.append((now, batch))
        while self._recent and self._recent[0][0] < now - RECHECK:
            self._recent.popleft()

    def _sort_out(self, records: Sequence[PageRecord]) -> tuple[list[PageRecord], list[PageRecord]]:
        """(to drop, to write): the records of hosts lost meanwhile, and the others."""
        dropped: list[PageRecord] = []
        batch: list[PageRecord] = []
        for record in records:
            lost = host_key(record.fetch.request.url) in self._void
            (dropped if lost else batch).append(record)
        return dropped, batch

    async def _committed(self, batch: list[PageRecord]) -> bool:
        """Did the batch's transaction commit? Its done marks say: all of them or none (but
        that a URL not in the frontier, a sitemap's row, has none: then written again, which
        changes nothing but the worker's page count)."""
        own = sorted({r.fetch.request.identity for r in batch})
        done = await self._db.fetchall(DONE_OF, (own, self._crawl_id), on="write")
        return bool(done)

    async def _recheck(self) -> None:
        """After an outage: the batches committed just before it whose done marks the server
        lost are written again (those of hosts lost meanwhile dropped: not ours to write)."""
        self._outages_seen = self._db.outages
        recent, self._recent = list(self._recent), deque()
        for _, batch in recent:
            _, mine = self._sort_out(batch)
            if mine and not await self._committed(mine):
                await self._store(mine, [])

    async def _write(self, records: Sequence[PageRecord]) -> None:
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

        await self._db.run(work, label="sink", again=False)

    async def links_from(self, url: str) -> list[str]:
        rows = await self._db.fetchall(f"SELECT links FROM pages WHERE {BY_URL}", {"url": url})
        links: list[str] = json.loads(rows[0][0]) if rows and rows[0][0] else []
        return links
