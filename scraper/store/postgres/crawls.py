"""Rows of the `crawls` table on PostgreSQL, from the crawl's side: start, resume, join, finish.

Every process working on a crawl (the one that started it and the workers that joined) holds a
shared session advisory lock (CRAWL_LOCK, crawl id). The server drops it with the session, kill
-9 included, so a crawl still `running` with no holder is one whose processes all died: the next
start records it `interrupted` (as SQLite's lock file lets it), and the read side shows it so
meanwhile. The lock is taken in the transaction that makes the row `running`, so no reader ever
sees a running crawl without a holder.

With several workers the row is finished once, by the first that finds the crawl over; a
worker that stops while others go on leaves the row `running`, and the last one to stop marks it
`interrupted`.
"""

from __future__ import annotations

import json
from typing import Any

from scraper.errors import ConfigError, StorageError
from scraper.models import SeedList
from scraper.store.base import FleetRules, utc_now
from scraper.store.crawl_log import CrawlEnd, SqlCrawlLog, counters_json
from scraper.store.dialect import POSTGRES
from scraper.store.fleet_health import health_of, merge_healths
from scraper.store.postgres.database import CRAWL_LOCK, Conn, PgDatabase

# The crawls some process works on now: advisory locks of ours, in this database.
HELD = (
    "SELECT objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND classid = %s AND objsubid = 2"
)
_DEAD_ARE_INTERRUPTED = (
    "UPDATE crawls SET status = 'interrupted' WHERE status = 'running' "
    f"AND id NOT IN ({HELD.replace('%s', str(CRAWL_LOCK))})"
)


async def _held(conn: Conn, *, others_only: bool = False) -> set[int]:
    """The crawls some process (other than this one) works on now."""
    sql = HELD + (" AND pid <> pg_backend_pid()" if others_only else "")
    cursor = await conn.execute(sql, (CRAWL_LOCK,))
    return {int(crawl_id) for (crawl_id,) in await cursor.fetchall()}


class PgCrawlLog(SqlCrawlLog):
    """`CrawlLog` (store/base.py) on the backend's `write` connection."""

    def __init__(self, db: PgDatabase, worker: str) -> None:
        super().__init__(db.fetchall, POSTGRES, db.location)
        self._db = db
        self._me = worker  # this process's `workers` row

    async def start(self, seeds: SeedList, config_json: str) -> int:
        async def work(conn: Conn) -> int:
            await conn.execute(_DEAD_ARE_INTERRUPTED)
            cursor = await conn.execute(
                "INSERT INTO crawls (started_at, status, seeds, config, seeds_digest, "
                "seeds_count) VALUES (%s, 'running', %s, %s, %s, %s) RETURNING id",
                (utc_now(), json.dumps(list(seeds.sample)), config_json, seeds.digest, seeds.count),
            )
            row = await cursor.fetchone()
            assert row is not None
            await conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", (CRAWL_LOCK, row[0]))
            return int(row[0])

        return await self._db.run(work)

    async def reopen(self, crawl_id: int) -> None:
        async def work(conn: Conn) -> None:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (CRAWL_LOCK,))
            if crawl_id in await _held(conn):
                raise StorageError(
                    f"{self._db.location}: crawl {crawl_id} is running in another process; "
                    "join it (scraper worker), wait for it, or start a new crawl (--fresh)"
                )
            await conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", (CRAWL_LOCK, crawl_id))
            await conn.execute(_DEAD_ARE_INTERRUPTED)
            await conn.execute(
                "UPDATE crawls SET status = 'running', finished_at = NULL WHERE id = %s",
                (crawl_id,),
            )

        await self._db.run(work)

    async def join(self, crawl_id: int) -> None:
        """Hold the crawl beside the processes on it; it must be running (a stopped crawl is
        resumed by `scraper crawl`, which gives its dead processes' leases back first)."""

        async def work(conn: Conn) -> None:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (CRAWL_LOCK,))
            cursor = await conn.execute("SELECT status FROM crawls WHERE id = %s", (crawl_id,))
            row = await cursor.fetchone()
            if row is None:
                raise StorageError(f"{self._db.location}: no crawl {crawl_id} there")
            if row[0] != "running" or crawl_id not in await _held(conn):
                state = "finished" if row[0] == "finished" else "not running"
                raise StorageError(
                    f"{self._db.location}: crawl {crawl_id} is {state}; a worker joins a "
                    "running crawl (scraper crawl starts or resumes one)"
                )
            await conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", (CRAWL_LOCK, crawl_id))

        await self._db.run(work)

    async def check_rules(self, crawl_id: int, rules: FleetRules) -> None:
        """A process joining the crawl must apply the rules its other processes do (as the one
        that started or resumed it recorded them: frontier.py's reset_leases), or the page
        limits and the politeness slots would not be the same for all. One line, before this
        process takes any work."""
        rows = await self._db.fetchall(
            "SELECT max_pages, max_pages_per_host, politeness_key, spider FROM crawl_rules "
            "WHERE crawl_id = %s",
            (crawl_id,),
        )
        if not rows:
            return  # begun by a scraper before schema v4, which recorded none
        max_pages, per_host, key, spider = rows[0]
        if spider != rules.spider:
            raise ConfigError(_other_spider(crawl_id, theirs=spider, mine=rules.spider))
        if key == "ip":
            raise ConfigError(
                f'crawl {crawl_id} runs with fetch.politeness_key = "ip", which cannot hold '
                "across processes (each resolves names on its own): no worker can join it"
            )
        theirs = {
            "crawl.max_pages": int(max_pages),
            "crawl.max_pages_per_host": int(per_host),
            "fetch.politeness_key": key,
        }
        mine = {
            "crawl.max_pages": rules.max_pages,
            "crawl.max_pages_per_host": rules.max_pages_per_host,
            "fetch.politeness_key": rules.politeness_key,
        }
        for name, value in mine.items():
            if value != theirs[name]:
                raise ConfigError(
                    f"{name} = {value!r} here, but crawl {crawl_id} runs with "
                    f"{theirs[name]!r}: give every process the crawl's config (the same "
                    "config.toml and --set)"
                )

    async def _record(self, end: CrawlEnd) -> None:
        crawl_id, status = end.summary.crawl_id, end.summary.status

        async def work(conn: Conn) -> None:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (CRAWL_LOCK,))
            others = await _held(conn, others_only=True)
            health = await _fleet_health(conn, crawl_id, self._me, end.health)
            # Finished: once, by the first to find the crawl over. Stopped: recorded by the last
            # process to stop; while others go on, the crawl is still running. Either way the
            # row's health is every process's so far: each that ends merges its own in.
            recorded = False
            if status == "finished" or crawl_id not in others:
                cursor = await conn.execute(end.sql, end.params(health))
                recorded = cursor.rowcount > 0  # (none: another recorded it finished)
            if not recorded:
                await _keep_health(conn, crawl_id, health)
            await conn.execute("SELECT pg_advisory_unlock_shared(%s, %s)", (CRAWL_LOCK, crawl_id))

        await self._db.run(work)


async def _fleet_health(conn: Conn, crawl_id: int, me: str, mine: dict[str, Any]) -> dict[str, Any]:
    """Keep this process's health in its `workers` row, and merge every process's on the crawl
    (in the order they ended: the last one's per-host settings win)."""
    own = health_of(mine)
    cursor = await conn.execute(
        "UPDATE workers SET health = %s, queued = 0, in_flight = 0 WHERE crawl_id = %s AND id = %s",
        (json.dumps(own), crawl_id, me),
    )
    registered = cursor.rowcount > 0  # (a process that never claimed a host has no row)
    cursor = await conn.execute(
        "SELECT health FROM workers WHERE crawl_id = %s AND health IS NOT NULL "
        "ORDER BY finished_at NULLS LAST, id",
        (crawl_id,),
    )
    healths = [json.loads(text) for (text,) in await cursor.fetchall()]
    return merge_healths(healths if registered else [*healths, own])


async def _keep_health(conn: Conn, crawl_id: int, health: dict[str, Any]) -> None:
    """The crawl's counters with the fleet's merged health in place of what they had (recorded
    by another process's end, or by none yet). In Python, not jsonb: jsonb reorders keys, and
    the hosts' order is the summary's."""
    cursor = await conn.execute("SELECT counters FROM crawls WHERE id = %s", (crawl_id,))
    row = await cursor.fetchone()
    counters = json.loads(row[0]) if row is not None and row[0] else {}
    await conn.execute(
        "UPDATE crawls SET counters = %s WHERE id = %s",
        (counters_json(counters, health), crawl_id),
    )


def _other_spider(crawl_id: int, *, theirs: str, mine: str) -> str:
    """Why a process may not join: its spider is not the crawl's (digests of their source)."""
    if not theirs:
        return f"crawl {crawl_id} runs without a spider; this process has one (drop --spider)"
    if not mine:
        return (
            f"crawl {crawl_id} runs with a spider ({theirs[:19]}); give this process the same "
            "one (--spider FILE.py:Class)"
        )
    return (
        f"crawl {crawl_id} runs with another spider ({theirs[:19]}, this one is {mine[:19]}): "
        "every process on a crawl must call the same callbacks; give it the same source"
    )
