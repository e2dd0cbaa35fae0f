"""The frontier in SQLite: every URL a crawl has discovered, a row with its state.

A row is pending, leased to this process or done (`FrontierState`). Discovered URLs are inserted
by the sink in the same transaction as the page that found them, and a URL becomes done in the same
transaction as its own page, so a crash at any instant loses nothing and stores nothing twice:
on resume, leased rows go back to pending and are fetched again. Memory holds only what the
scheduler has leased (bounded by `crawl.queue_size`) and a bounded cache of recently seen URLs.

Page limits (`FleetRules`: crawl.max_pages, crawl.max_pages_per_host) are counted as URLs are
leased, in the lease's transaction, as on PostgreSQL: a budget is the URLs leased or done in the
crawl, whichever run stored them. One process owns the database (it holds `<db>.lock`), so the
counts live in its memory: the crawl's, counted once per run; a host's, counted from its rows
when it is first leased from and forgotten when its lease is released (`SqliteHostLeases`), so
they cost memory only for the hosts held; and the hosts that reached their cap, for the run.
Nothing goes back to pending during a run, so a count only grows; `reset_leases` starts anew.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import aiosqlite

from scraper.models import CrawlRequest
from scraper.store.base import NO_RULES, FleetRules, FrontierState
from scraper.store.rows import REQUEST_COLUMNS, leased_request, request_values
from scraper.store.sqlite.database import Database
from scraper.urls import host_key

PENDING, LEASED, DONE = (int(state) for state in FrontierState)

INSERT_DISCOVERED = (
    f"INSERT OR IGNORE INTO frontier (crawl_id, url, host, depth, referrer, hops, "
    f"{', '.join(REQUEST_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?{', ?' * len(REQUEST_COLUMNS)})"
)
MARK_DONE = f"UPDATE frontier SET state = {DONE} WHERE crawl_id = ? AND url = ?"
# What a budget has taken: the URLs leased or done (walks the frontier_pending index).
TAKEN_BY_HOST = (
    f"SELECT count(*) FROM frontier WHERE crawl_id = ? AND host = ? AND state IN ({LEASED}, {DONE})"
)
TAKEN = f"SELECT count(*) FROM frontier WHERE crawl_id = ? AND state IN ({LEASED}, {DONE})"


class SqliteFrontier:
    """`Frontier` (store/base.py) on the crawl's shared connection."""

    def __init__(
        self,
        db: Database,
        crawl_id: int,
        recrawl_after: float = 0.0,
        rules: FleetRules = NO_RULES,
    ) -> None:
        self._db = db
        self._crawl_id = crawl_id
        self._recrawl_after = recrawl_after
        self._rules = rules
        self._taken: int | None = None  # the crawl's budget taken (None: not counted yet)
        self._taken_by_host: dict[str, int] = {}  # of the hosts leased from and not released
        self._capped: set[str] = set()  # hosts at crawl.max_pages_per_host

    @property
    def spent(self) -> bool:
        """Is crawl.max_pages taken, leased or done? (Exact: nothing returns to the budget.)"""
        limit = self._rules.max_pages
        return bool(limit) and self._taken is not None and self._taken >= limit

    def capped(self, host: str) -> bool:
        """Has `host` reached crawl.max_pages_per_host, as far as this run has leased from it?"""
        return host in self._capped

    def forget(self, host: str) -> None:
        """The host's lease ended: its count is read again from its rows if it comes back."""
        self._taken_by_host.pop(host, None)

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
            self._taken = None
            self._taken_by_host.clear()
            self._capped.clear()
            return cursor.rowcount

    async def lease(self, host: str, limit: int) -> list[CrawlRequest]:
        """Up to `limit` pending URLs of `host`, oldest first, marked leased in one transaction.

        Each comes with the validators of its stored page (for a conditional request) and whether
        that page is younger than `crawl.recrawl_after` (then it is not fetched again).
        """
        async with self._db.transaction() as conn:
            room = await self._room(conn, host, limit)
            rows = []
            if room > 0:
                rows = list(
                    await conn.execute_fetchall(
                        "SELECT f.seq, f.url, f.depth, f.referrer, f.hops, "
                        f"{', '.join('f.' + c for c in REQUEST_COLUMNS)}, p.etag, "
                        "  p.last_modified, "
                        "  p.fetched_at > strftime('%Y-%m-%dT%H:%M:%f', 'now', ?), "
                        "  p.warc_date, p.warc_digest "
                        "FROM frontier f LEFT JOIN pages p ON p.url = f.url "
                        f"WHERE f.crawl_id = ? AND f.host = ? AND f.state = {PENDING} "
                        "ORDER BY f.seq LIMIT ?",
                        (f"-{self._recrawl_after} seconds", self._crawl_id, host, room),
                    )
                )
                await conn.executemany(
                    f"UPDATE frontier SET state = {LEASED} WHERE seq = ?", [(r[0],) for r in rows]
                )
        self._count(host, len(rows))  # (committed: the transaction above did not raise)
        return [leased_request(row[1:], self._recrawl_after) for row in rows]

    async def _room(self, conn: aiosqlite.Connection, host: str, limit: int) -> int:
        """How many URLs of `host` the budgets let this lease take (counting them first, in the
        lease's transaction, where this run has not yet)."""
        rules, room = self._rules, limit
        if rules.max_pages_per_host:
            taken = self._taken_by_host.get(host)
            if taken is None:
                taken = self._taken_by_host[host] = await _scalar(
                    conn, TAKEN_BY_HOST, self._crawl_id, host
                )
            if taken >= rules.max_pages_per_host:
                self._capped.add(host)
            room = min(room, rules.max_pages_per_host - taken)
        if rules.max_pages:
            if self._taken is None:
                self._taken = await _scalar(conn, TAKEN, self._crawl_id)
            room = min(room, rules.max_pages - self._taken)
        return room

    def _count(self, host: str, leased: int) -> None:
        rules = self._rules
        if rules.max_pages and self._taken is not None:
            self._taken += leased
        if rules.max_pages_per_host and host in self._taken_by_host:
            taken = self._taken_by_host[host] = self._taken_by_host[host] + leased
            if taken >= rules.max_pages_per_host:
                self._capped.add(host)

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
        [
            (crawl_id, r.identity, host_key(r.url), r.depth, r.referrer, r.hops, *request_values(r))
            for r in requests
        ],
    )


async def _scalar(conn: aiosqlite.Connection, sql: str, *params: object) -> int:
    rows = list(await conn.execute_fetchall(sql, params))
    return int(rows[0][0]) if rows else 0
