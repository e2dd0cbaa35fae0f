"""The frontier in SQLite: every URL a crawl has discovered, a row with its state.

A row is pending, leased to this process or done (`FrontierState`). Discovered URLs are inserted
by the sink in the same transaction as the page that found them, and a URL becomes done in the same
transaction as its own page, so a crash at any instant loses nothing and stores nothing twice:
on resume, leased rows go back to pending and are fetched again. Memory holds only what the
scheduler has leased (bounded by `crawl.queue_size`) and a bounded cache of recently seen URLs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import aiosqlite

from scraper.models import CrawlRequest
from scraper.store.base import FrontierState
from scraper.store.sqlite.database import Database
from scraper.urls import host_key

PENDING, LEASED, DONE = (int(state) for state in FrontierState)

INSERT_DISCOVERED = (
    "INSERT OR IGNORE INTO frontier (crawl_id, url, host, depth, referrer, hops) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
MARK_DONE = f"UPDATE frontier SET state = {DONE} WHERE crawl_id = ? AND url = ?"


class SqliteFrontier:
    """`Frontier` (store/base.py) on the crawl's shared connection."""

    def __init__(self, db: Database, crawl_id: int, recrawl_after: float = 0.0) -> None:
        self._db = db
        self._crawl_id = crawl_id
        self._recrawl_after = recrawl_after

    async def seed(self, requests: Sequence[CrawlRequest]) -> None:
        async with self._db.transaction() as conn:
            await insert_discovered(conn, self._crawl_id, requests)

    async def reset_leases(self) -> int:
        """Return what a dead process had leased to pending; the number of rows."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                f"UPDATE frontier SET state = {PENDING} WHERE crawl_id = ? AND state = {LEASED}",
                (self._crawl_id,),
            )
            return cursor.rowcount

    async def lease(self, host: str, limit: int) -> list[CrawlRequest]:
        """Up to `limit` pending URLs of `host`, oldest first, marked leased in one transaction.

        Each comes with the validators of its stored page (for a conditional request) and whether
        that page is younger than `crawl.recrawl_after` (then it is not fetched again).
        """
        async with self._db.transaction() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT f.seq, f.url, f.depth, f.referrer, f.hops, p.etag, p.last_modified, "
                    "  p.fetched_at > strftime('%Y-%m-%dT%H:%M:%f', 'now', ?) "
                    "FROM frontier f LEFT JOIN pages p ON p.url = f.url "
                    f"WHERE f.crawl_id = ? AND f.host = ? AND f.state = {PENDING} "
                    "ORDER BY f.seq LIMIT ?",
                    (f"-{self._recrawl_after} seconds", self._crawl_id, host, limit),
                )
            )
            await conn.executemany(
                f"UPDATE frontier SET state = {LEASED} WHERE seq = ?", [(r[0],) for r in rows]
            )
        return [
            CrawlRequest(
                url=url,
                depth=depth,
                referrer=referrer,
                hops=hops,
                etag=etag,
                last_modified=modified,
                fresh=bool(fresh) and self._recrawl_after > 0,
            )
            for _, url, depth, referrer, hops, etag, modified, fresh in rows
        ]

    async def pending_hosts(self, limit: int, after: str = "") -> list[str]:
        # Walks the frontier_pending index (crawl_id, host, state, seq) in host order.
        rows = await self._db.fetchall(
            "SELECT DISTINCT host FROM frontier "
            f"WHERE crawl_id = ? AND host > ? AND state = {PENDING} ORDER BY host LIMIT ?",
            (self._crawl_id, after, limit),
        )
        return [host for (host,) in rows]

    async def count(self, state: FrontierState) -> int:
        return int(
            await self._db.scalar(
                "SELECT count(*) FROM frontier WHERE crawl_id = ? AND state = ?",
                (self._crawl_id, int(state)),
            )
        )


async def insert_discovered(
    conn: aiosqlite.Connection, crawl_id: int, requests: Iterable[CrawlRequest]
) -> None:
    """Add requests to the frontier inside the caller's transaction; known URLs are ignored."""
    await conn.executemany(
        INSERT_DISCOVERED,
        [(crawl_id, r.url, host_key(r.url), r.depth, r.referrer, r.hops) for r in requests],
    )
