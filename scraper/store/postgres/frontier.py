"""The frontier in PostgreSQL: the same rows and states as on SQLite (store/sqlite/frontier.py).

Discovered URLs go through a temporary table filled by COPY, then one INSERT ... SELECT in the
URLs' order, ON CONFLICT DO NOTHING: every batch takes the unique index's locks in one order, so
two processes storing batches at once wait for each other but never deadlock. Their `seq` is
drawn in discovery order first (a volatile nextval is evaluated after the ORDER BY of its
query), so leases still come oldest first. Measured (bench/pg_drivers.py): this is the
cheapest path for the event loop's process, ~6 ms of its CPU per 200 pages and 2,000 URLs against
~13 ms with arrays and ~22 ms with pipelined executemany.

A lease is one statement: the oldest pending rows of a host, FOR UPDATE SKIP LOCKED (so two
leases never take the same row, nor wait for each other), marked leased, joined to their stored
pages' validators. With page limits (`FleetRules`: crawl.max_pages, crawl.max_pages_per_host,
for the whole crawl) a lease also takes its URLs from the crawl's budget and the host's, in one
transaction: the host's row (only its owner leases its URLs), then the crawl's budget row, each
FOR UPDATE, then the URLs. So the limits are exact across processes (a URL given back returns
to the budget: leases.py), and the one row every process shares is locked per lease, a few
URLs at a time, for a round trip or two, never per page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from scraper.domains import domain_of_host_key
from scraper.models import CrawlRequest
from scraper.store.base import NO_RULES, FleetRules, FrontierState
from scraper.store.postgres.database import Conn, PgDatabase
from scraper.store.rows import REQUEST_COLUMNS, leased_request, request_values
from scraper.urls import host_key

PENDING, LEASED, DONE = (int(state) for state in FrontierState)

# Made once per connection (PgDatabase's setup: temporary tables are per session); emptied at
# each commit.
CREATE_FOUND = (
    "CREATE TEMP TABLE IF NOT EXISTS found (n int, url text, host text, depth int, "
    "referrer text, hops int, method text, headers text, body bytea, callback text, meta text) "
    "ON COMMIT DELETE ROWS"
)
_REQUEST = ", ".join(REQUEST_COLUMNS)
INSERT_FOUND = (
    f"INSERT INTO frontier (seq, crawl_id, url, host, depth, referrer, hops, {_REQUEST}) "
    f"SELECT seq, %s, url, host, depth, referrer, hops, {_REQUEST} FROM ("
    "  SELECT nextval(pg_get_serial_sequence('frontier', 'seq')) AS seq, * FROM found ORDER BY n"
    ") d ORDER BY url ON CONFLICT DO NOTHING"
)
# A batch's hosts first, in host order: their rows say they have pending URLs, and taking them
# before the URLs go in keeps a release from missing those (see leases.py). A new host's row
# records its registrable domain (its lease's group with fetch.politeness_key = "domain"); a
# host capped by crawl.max_pages_per_host stays not pending.
MARK_HOSTS = (
    "INSERT INTO hosts (crawl_id, host, grp) "
    "SELECT %s, h, g FROM unnest(%s::text[], %s::text[]) AS u(h, g) ORDER BY h "
    "ON CONFLICT (crawl_id, host) DO UPDATE SET pending = true "
    "WHERE NOT hosts.pending AND NOT hosts.capped"
)
MARK_DONE = (
    f"UPDATE frontier f SET state = {DONE} FROM unnest(%s::text[]) AS u(url) "
    "WHERE f.crawl_id = %s AND md5(f.url) = md5(u.url) AND f.url = u.url"
)
LEASE = (
    "WITH leased AS ("
    f"  UPDATE frontier f SET state = {LEASED} FROM ("
    "    SELECT seq FROM frontier"
    f"   WHERE crawl_id = %s AND host = %s AND state = {PENDING}"
    "    ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED"
    "  ) s WHERE f.seq = s.seq RETURNING f.seq, f.url, f.depth, f.referrer, f.hops, "
    f"  {', '.join('f.' + c for c in REQUEST_COLUMNS)}"
    ") "
    "SELECT l.url, l.depth, l.referrer, l.hops, "
    f"{', '.join('l.' + c for c in REQUEST_COLUMNS)}, p.etag, p.last_modified, p.fetched_at > %s, "
    "  p.warc_date, p.warc_digest "
    "FROM leased l LEFT JOIN pages p ON md5(p.url) = md5(l.url) AND p.url = l.url "
    "ORDER BY l.seq"
)


HOST_TAKEN = "SELECT taken FROM hosts WHERE crawl_id = %s AND host = %s FOR UPDATE"
CRAWL_TAKEN = "SELECT taken FROM crawl_rules WHERE crawl_id = %s FOR UPDATE"
COUNT_CRAWL = "UPDATE crawl_rules SET taken = taken + %s WHERE crawl_id = %s"
COUNT_HOST = (
    "UPDATE hosts SET taken = taken + %(n)s, capped = taken + %(n)s >= %(cap)s "
    "WHERE crawl_id = %(crawl)s AND host = %(host)s"
)


class PgFrontier:
    """`Frontier` (store/base.py) for one crawl."""

    def __init__(
        self,
        db: PgDatabase,
        crawl_id: int,
        recrawl_after: float = 0.0,
        rules: FleetRules = NO_RULES,
    ) -> None:
        self._db = db
        self._crawl_id = crawl_id
        self._recrawl_after = recrawl_after
        self._rules = rules

    @property
    def spent(self) -> bool:
        return False  # never certain: a URL another process gives back returns to the budget

    async def seed(self, requests: Sequence[CrawlRequest]) -> None:
        async def work(conn: Conn) -> None:
            await insert_discovered(conn, self._crawl_id, requests)

        await self._db.run(work)

    async def reset_leases(self) -> int:
        """On a start or resume (no process is on the crawl: crawls.py checked): every URL and
        host that dead processes held goes back, and the page budgets count what is done (the
        pages a resumed crawl stored count against its limits, as on SQLite)."""
        crawl = self._crawl_id

        async def work(conn: Conn) -> int:
            cursor = await conn.execute(
                f"UPDATE frontier SET state = {PENDING} WHERE crawl_id = %s AND state = {LEASED}",
                (crawl,),
            )
            await self._count_done(conn)
            if self._rules.by_domain:
                await _record_domains(conn, crawl)
            await conn.execute(
                "UPDATE hosts SET owner = NULL, lease_until = NULL, pending = NOT capped AND "
                f"EXISTS (SELECT 1 FROM frontier f WHERE f.crawl_id = hosts.crawl_id "
                f"  AND f.host = hosts.host AND f.state = {PENDING}) "
                "WHERE crawl_id = %s",
                (crawl,),
            )
            return cursor.rowcount

        return await self._db.run(work, on="hosts")

    async def _count_done(self, conn: Conn) -> None:
        """The rules of this run (what joining workers must share) and its budgets as it
        starts: the done URLs, per crawl and per host (counted only when limited: a pass over
        the crawl's frontier)."""
        crawl, rules = self._crawl_id, self._rules
        done = 0
        if rules.max_pages:
            cursor = await conn.execute(
                f"SELECT count(*) FROM frontier WHERE crawl_id = %s AND state = {DONE}", (crawl,)
            )
            row = await cursor.fetchone()
            done = int(row[0]) if row else 0
        await conn.execute(
            "INSERT INTO crawl_rules (crawl_id, max_pages, max_pages_per_host, politeness_key, "
            "taken, spider) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (crawl_id) DO UPDATE SET "
            "max_pages = excluded.max_pages, max_pages_per_host = excluded.max_pages_per_host, "
            "politeness_key = excluded.politeness_key, taken = excluded.taken, "
            "spider = excluded.spider",
            (
                crawl,
                rules.max_pages,
                rules.max_pages_per_host,
                rules.politeness_key,
                done,
                rules.spider,
            ),
        )
        await conn.execute(
            "UPDATE hosts SET taken = 0, capped = false WHERE crawl_id = %s AND taken > 0",
            (crawl,),
        )
        if rules.max_pages_per_host:
            await conn.execute(
                "UPDATE hosts h SET taken = d.n, capped = d.n >= %s FROM ("
                f"  SELECT host, count(*) AS n FROM frontier WHERE crawl_id = %s AND state = {DONE}"
                "   GROUP BY host"
                ") d WHERE h.crawl_id = %s AND h.host = d.host",
                (rules.max_pages_per_host, crawl, crawl),
            )

    async def lease(self, host: str, limit: int) -> list[CrawlRequest]:
        """Up to `limit` pending URLs of `host`, oldest first, now leased (one statement; with
        page limits, a transaction that counts them too)."""
        # Stored times are ISO 8601 text in UTC: a string compares as the time does.
        fresh_after = (datetime.now(UTC) - timedelta(seconds=self._recrawl_after)).isoformat(
            timespec="milliseconds"
        )
        if self._rules.max_pages or self._rules.max_pages_per_host:

            async def counted(conn: Conn) -> list[tuple[Any, ...]]:
                return await self._lease_counted(conn, host, limit, fresh_after)

            rows = await self._db.run(counted, on="lease", label="lease")
        else:
            rows = await self._db.fetchall(
                LEASE, (self._crawl_id, host, limit, fresh_after), label="lease"
            )
        return [leased_request(row, self._recrawl_after) for row in rows]

    async def _lease_counted(
        self, conn: Conn, host: str, limit: int, fresh_after: str
    ) -> list[tuple[Any, ...]]:
        """A lease within the budgets, in the caller's transaction. Locks in the order every
        transaction keeps (leases.py): the host's row, the crawl's budget row, then frontier
        rows (SKIP LOCKED: it waits for none of them while it holds the budget)."""
        crawl, rules = self._crawl_id, self._rules
        room = limit
        if rules.max_pages_per_host:
            room = min(room, rules.max_pages_per_host - await _taken(conn, HOST_TAKEN, crawl, host))
        if rules.max_pages:
            room = min(room, rules.max_pages - await _taken(conn, CRAWL_TAKEN, crawl))
        if room <= 0:
            return []
        cursor = await conn.execute(LEASE, (crawl, host, room, fresh_after))
        rows = await cursor.fetchall()
        if rows and rules.max_pages:
            await conn.execute(COUNT_CRAWL, (len(rows), crawl))
        if rows and rules.max_pages_per_host:
            await conn.execute(
                COUNT_HOST,
                {"n": len(rows), "cap": rules.max_pages_per_host, "crawl": crawl, "host": host},
            )
        return rows

    async def pending_hosts(self, limit: int, after: str = "") -> list[str]:
        # Walks the frontier_pending index (crawl_id, host, seq) in host order.
        rows = await self._db.fetchall(
            "SELECT DISTINCT host FROM frontier "
            f"WHERE crawl_id = %s AND host > %s AND state = {PENDING} ORDER BY host LIMIT %s",
            (self._crawl_id, after, limit),
        )
        return [host for (host,) in rows]

    async def count(self, state: FrontierState) -> int:
        return int(
            await self._db.scalar(
                "SELECT count(*) FROM frontier WHERE crawl_id = %s AND state = %s",
                (self._crawl_id, int(state)),
            )
        )


async def insert_discovered(conn: Conn, crawl_id: int, requests: Iterable[CrawlRequest]) -> int:
    """Add requests to the frontier inside the caller's transaction; known URLs are ignored.
    Returns how many rows were new."""
    seen: set[str] = set()
    rows: list[tuple[Any, ...]] = []
    for request in requests:
        key = request.identity
        if key not in seen:  # one row per request: ON CONFLICT cannot touch a row twice
            seen.add(key)
            rows.append(
                (len(rows), key, host_key(request.url), request.depth, request.referrer,
                 request.hops, *request_values(request))
            )  # fmt: skip
    if not rows:
        return 0
    cursor = conn.cursor()
    hosts = sorted({row[2] for row in rows})
    await cursor.execute(MARK_HOSTS, (crawl_id, hosts, [domain_of_host_key(h) for h in hosts]))
    async with cursor.copy("COPY found FROM STDIN") as copy:
        for row in rows:
            await copy.write_row(row)
    await cursor.execute(INSERT_FOUND, (crawl_id,))
    return cursor.rowcount


async def _taken(conn: Conn, sql: str, *params: Any) -> int:
    """A budget's count, its row now locked (none yet: 0)."""
    cursor = await conn.execute(sql, params)
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _record_domains(conn: Conn, crawl_id: int) -> None:
    """Hosts recorded before their rows had a domain (schema v3) get it, so a crawl resumed
    with politeness by domain leases them by domain too."""
    cursor = await conn.execute(
        "SELECT host FROM hosts WHERE crawl_id = %s AND grp IS NULL", (crawl_id,)
    )
    hosts = [host for (host,) in await cursor.fetchall()]
    if hosts:
        await conn.execute(
            "UPDATE hosts h SET grp = u.g FROM unnest(%s::text[], %s::text[]) AS u(host, g) "
            "WHERE h.crawl_id = %s AND h.host = u.host",
            (hosts, [domain_of_host_key(host) for host in hosts], crawl_id),
        )
