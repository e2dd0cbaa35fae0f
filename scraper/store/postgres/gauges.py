"""A fleet's live gauges on PostgreSQL: each process writes its URLs admitted and not fetched and
its requests on the wire into its `workers` row every few seconds (crawl/gauges.py), and reads
the others' summed (and the pages they stored, every run's), with the frontier's pending URLs
when it shows them. Three statements on the
host leases' connection every few seconds, none per page; the count of pending URLs reads the
partial index of pending rows and stops at PENDING_COUNTED (~20 ms at that size here)."""

from __future__ import annotations

from scraper.store.base import PENDING_COUNTED, FleetLoad
from scraper.store.postgres.database import Conn, PgDatabase

# A process gauged longer ago than this is not counted: it died (kill -9 leaves its row
# `running`), or it cannot reach the server.
STALE = "15 seconds"

_PUBLISH = (
    "UPDATE workers SET queued = %s, in_flight = %s, gauged_at = now() "
    "WHERE crawl_id = %s AND id = %s"
)
_LIVE = f"status = 'running' AND gauged_at > now() - interval '{STALE}'"
_OTHERS = (
    f"SELECT count(*) FILTER (WHERE {_LIVE}), coalesce(sum(queued) FILTER (WHERE {_LIVE}), 0), "
    f"coalesce(sum(in_flight) FILTER (WHERE {_LIVE}), 0), coalesce(sum(pages), 0) "
    "FROM workers WHERE crawl_id = %s AND id <> %s"
)
_PENDING = (
    "SELECT count(*) FROM (SELECT 1 FROM frontier WHERE crawl_id = %s AND state = 0 "
    f"LIMIT {PENDING_COUNTED + 1}) AS p"
)


class PgFleetGauges:
    """`FleetGauges` (store/base.py) of one process on one crawl."""

    def __init__(self, db: PgDatabase, crawl_id: int, worker: str) -> None:
        self._db = db
        self._crawl = crawl_id
        self._me = worker

    async def exchange(self, queued: int, in_flight: int, *, count_pending: bool) -> FleetLoad:
        async def work(conn: Conn) -> FleetLoad:
            await conn.execute(_PUBLISH, (queued, in_flight, self._crawl, self._me))
            cursor = await conn.execute(_OTHERS, (self._crawl, self._me))
            row = await cursor.fetchone()
            assert row is not None
            pending = None
            if count_pending:
                cursor = await conn.execute(_PENDING, (self._crawl,))
                counted = await cursor.fetchone()
                assert counted is not None
                pending = int(counted[0])
            return FleetLoad(
                pending=None if pending is None else min(pending, PENDING_COUNTED),
                pending_capped=pending is not None and pending > PENDING_COUNTED,
                others=int(row[0]),
                queued=int(row[1]),
                in_flight=int(row[2]),
                stored=int(row[3]),
            )

        return await self._db.run(work, on="hosts", transaction=False, label="gauges")
