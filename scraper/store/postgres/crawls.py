"""Rows of the `crawls` table on PostgreSQL, from the crawl's side: start, resume, finish.

A crawl process holds a session advisory lock (CRAWL_LOCK, crawl id) while it works on a crawl.
The server drops it with the session, kill -9 included, so a crawl still `running` with no
holder is one whose process died: the next start records it `interrupted` (as SQLite's lock file
lets it), and the read side shows it so meanwhile. The lock is taken in the transaction that
makes the row `running`, so no reader ever sees a running crawl without its holder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from scraper.errors import StorageError
from scraper.store.base import RESUMABLE, CrawlSummary, utc_now
from scraper.store.postgres.database import CRAWL_LOCK, Conn, PgDatabase
from scraper.store.postgres.dialect import COUNT_QUERIES, counts_from

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


class PgCrawlLog:
    """`CrawlLog` (store/base.py) on the backend's `write` connection."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def unfinished(self, seeds: Sequence[str]) -> tuple[int, int | None]:
        same = await self._db.fetchall(
            "SELECT id, status FROM crawls WHERE seeds = %s ORDER BY id DESC LIMIT 1",
            (json.dumps(list(seeds)),),
        )
        mine = int(same[0][0]) if same and same[0][1] in RESUMABLE else 0
        newest = await self._db.fetchall("SELECT id, status FROM crawls ORDER BY id DESC LIMIT 1")
        other = int(newest[0][0]) if newest and newest[0][1] in RESUMABLE else None
        return mine, other if other != mine else None

    async def start(self, seeds: Sequence[str], config_json: str) -> int:
        async def work(conn: Conn) -> int:
            await conn.execute(_DEAD_ARE_INTERRUPTED)
            cursor = await conn.execute(
                "INSERT INTO crawls (started_at, status, seeds, config) "
                "VALUES (%s, 'running', %s, %s) RETURNING id",
                (utc_now(), json.dumps(list(seeds)), config_json),
            )
            row = await cursor.fetchone()
            assert row is not None
            await conn.execute("SELECT pg_advisory_lock(%s, %s)", (CRAWL_LOCK, row[0]))
            return int(row[0])

        return await self._db.run(work)

    async def reopen(self, crawl_id: int) -> None:
        async def work(conn: Conn) -> None:
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (CRAWL_LOCK, crawl_id)
            )
            row = await cursor.fetchone()
            if not (row and row[0]):
                raise StorageError(
                    f"{self._db.location}: crawl {crawl_id} is running in another process; "
                    "wait for it, stop it, or start a new crawl (--fresh)"
                )
            await conn.execute(_DEAD_ARE_INTERRUPTED)
            await conn.execute(
                "UPDATE crawls SET status = 'running', finished_at = NULL WHERE id = %s",
                (crawl_id,),
            )

        await self._db.run(work)

    async def finish(
        self,
        crawl_id: int,
        status: str,
        run_seconds: float,
        *,
        resumed: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> CrawlSummary:
        results = [await self._db.fetchall(sql, (crawl_id,)) for sql in COUNT_QUERIES]
        counts = counts_from(*results)
        before = await self._db.scalar(
            "SELECT coalesce(duration_s, 0) FROM crawls WHERE id = %s", (crawl_id,)
        )
        summary = CrawlSummary(
            crawl_id=crawl_id,
            status=status,
            db=self._db.location,
            counts=counts,
            duration_s=round(float(before or 0) + run_seconds, 3),
            resumed=resumed,
        )
        counters = {"by_status": counts.by_status, "by_error": counts.by_error, **(extra or {})}

        async def work(conn: Conn) -> None:
            await conn.execute(
                "UPDATE crawls SET finished_at = %s, status = %s, pages = %s, errors = %s, "
                "bytes = %s, duration_s = %s, counters = %s WHERE id = %s",
                (
                    utc_now(),
                    status,
                    counts.pages,
                    counts.errors,
                    counts.bytes,
                    summary.duration_s,
                    json.dumps(counters),
                    crawl_id,
                ),
            )
            await conn.execute("SELECT pg_advisory_unlock_all()")

        await self._db.run(work)
        return summary
