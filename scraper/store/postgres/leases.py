"""Host leases on PostgreSQL: several processes ("workers") on one crawl, each host crawled by
one of them at a time, its politeness state handed from owner to owner.

A worker claims ready hosts (unowned, or whose lease expired) with FOR UPDATE SKIP LOCKED, so
two claims never wait for each other nor take the same host; each claim counts the host's epoch
up. It renews its leases every `renew_every` seconds (a sixth of the TTL), and sends a request
to a host only while its lease has `margin` seconds left (a request's longest time), measured
from when the claim or renewal was sent: the server's lease outlives ours, whatever the clocks
say. A lease that renewal does not return (expired and taken, epoch moved on) is lost: the
scheduler drops the host. On release the host's politeness state is written back (its next
start on the server's clock), and the URLs it had leased and not stored go back to pending.
A worker that dies leaves its leases to expire; the next claim of each host returns its leased
URLs to pending. URLs only go pending -> leased -> done, so nothing a dead worker held is lost.

`hosts.pending` says whether a host may have pending URLs. It may be true with none (a claim
then finds nothing and releases), but it is never false while some exist: a batch that inserts
URLs takes its hosts' rows first (an upsert, in host order: frontier.py `mark_hosts`), and a
release takes the row before it looks (a second statement, so it sees what such a batch
committed while it waited).

Deadlocks: every transaction takes hosts rows in host order before frontier rows, and claims
skip locked rows. A deadlock the server still detects is retried (database.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Coroutine
from typing import Any

from scraper.store.base import HostPoliteness, utc_now
from scraper.store.postgres.database import CRAWL_LOCK, Conn, PgDatabase

CLAIM = """
WITH candidates AS (
    SELECT host FROM hosts
    WHERE crawl_id = %(crawl)s AND (owner IS NULL OR lease_until < now())
      AND (pending OR owner IS NOT NULL)
    ORDER BY next_start LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), given_back AS (
    UPDATE frontier f SET state = 0 FROM candidates c
    WHERE f.crawl_id = %(crawl)s AND f.state = 1 AND f.host = c.host
)
UPDATE hosts h SET owner = %(me)s, lease_until = now() + make_interval(secs => %(ttl)s),
    epoch = h.epoch + 1, pending = true
FROM candidates c WHERE h.crawl_id = %(crawl)s AND h.host = c.host
RETURNING h.host, h.epoch, greatest(0, extract(epoch FROM h.next_start - now()))::float8,
    h.delay, h.concurrency, h.crawl_delay, h.backoff, h.robots
"""
RENEW = """
UPDATE hosts h SET lease_until = now() + make_interval(secs => %(ttl)s)
FROM (
    SELECT host FROM hosts WHERE crawl_id = %(crawl)s AND owner = %(me)s
    AND host = ANY(%(hosts)s) ORDER BY host FOR UPDATE
) mine
WHERE h.crawl_id = %(crawl)s AND h.host = mine.host
RETURNING h.host, h.epoch
"""
LOCK_HOST = "SELECT owner, epoch FROM hosts WHERE crawl_id = %s AND host = %s FOR UPDATE"
GIVE_BACK = "UPDATE frontier SET state = 0 WHERE crawl_id = %s AND host = %s AND state = 1"
RELEASE = """
UPDATE hosts SET owner = NULL, lease_until = NULL,
    pending = EXISTS (SELECT 1 FROM frontier
                      WHERE crawl_id = %(crawl)s AND host = %(host)s AND state = 0),
    next_start = now() + make_interval(secs => %(wait)s),
    delay = %(delay)s, concurrency = %(concurrency)s, crawl_delay = %(crawl_delay)s,
    backoff = %(backoff)s
WHERE crawl_id = %(crawl)s AND host = %(host)s
"""
# The hosts with work (pending URLs, or a live owner), over the processes on the crawl (each holds
# a shared advisory lock on it: crawls.py), rounded up.
FAIR_SHARE = """
SELECT ceil(
    (SELECT count(*) FROM hosts WHERE crawl_id = %(crawl)s
     AND (pending OR (owner IS NOT NULL AND lease_until > now())))::float8
    / greatest(1, (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid = %(lock)s AND objid = %(crawl)s AND objsubid = 2))
)::int
"""
OVER = """
SELECT NOT EXISTS (SELECT 1 FROM frontier WHERE crawl_id = %(crawl)s AND state = 0)
   AND NOT EXISTS (SELECT 1 FROM frontier WHERE crawl_id = %(crawl)s AND state = 1)
   AND NOT EXISTS (SELECT 1 FROM hosts WHERE crawl_id = %(crawl)s AND owner IS NOT NULL
                   AND lease_until > now())
"""


def worker_name() -> str:
    """This process, as `workers.id` and `hosts.owner` name it: machine, pid, and a nonce (a
    pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class PgHostLeases:
    """`HostLeases` (store/base.py) of one worker on one crawl."""

    shared = True

    def __init__(
        self, db: PgDatabase, crawl_id: int, worker: str, *, ttl: float, margin: float
    ) -> None:
        self._db = db
        self._crawl = crawl_id
        self._me = worker
        self._ttl = ttl
        self._margin = margin
        self._held: dict[str, tuple[int, float]] = {}  # host -> (epoch, valid until, loop time)
        self._registered = False

    @property
    def renew_every(self) -> float:
        return max(0.2, self._ttl / 6)

    @property
    def held(self) -> int:
        return len(self._held)

    def valid(self, host: str, now: float) -> bool:
        lease = self._held.get(host)
        return lease is not None and now + self._margin < lease[1]

    async def fair_share(self) -> int:
        share = await self._db.scalar(
            FAIR_SHARE, {"crawl": self._crawl, "lock": CRAWL_LOCK}, on="hosts"
        )
        return max(1, int(share or 1))

    async def claim(self, limit: int) -> list[HostPoliteness]:
        await self._register()
        limit = min(limit, await self.fair_share() - len(self._held))
        if limit <= 0:
            return []
        sent = asyncio.get_running_loop().time()
        rows = await self._db.fetchall(
            CLAIM,
            {"crawl": self._crawl, "limit": limit, "me": self._me, "ttl": self._ttl},
            on="hosts",
            transaction=True,
            label="claim",
        )
        grants = []
        for host, epoch, wait, delay, concurrency, crawl_delay, backoff, robots in rows:
            self._held[host] = (int(epoch), sent + self._ttl)
            grants.append(
                HostPoliteness(host, wait, delay, concurrency, crawl_delay, backoff, robots)
            )
        return grants

    async def renew(self) -> list[str]:
        if not self._held:
            return []
        sent = asyncio.get_running_loop().time()
        asked = dict(self._held)  # a claim may add hosts while this one waits: not these
        rows = await self._db.fetchall(
            RENEW,
            {"crawl": self._crawl, "me": self._me, "ttl": self._ttl, "hosts": list(asked)},
            on="hosts",
            transaction=True,
            label="renew",
        )
        kept = {host: int(epoch) for host, epoch in rows}
        lost = []
        for host, (epoch, _) in asked.items():
            if self._held.get(host, (None,))[0] != epoch:
                continue  # released meanwhile (or claimed again: a new lease)
            if kept.get(host) == epoch:
                self._held[host] = (epoch, sent + self._ttl)
            else:
                del self._held[host]
                lost.append(host)
        return lost

    def release(self, state: HostPoliteness) -> Coroutine[Any, Any, None]:
        # Not ours from the call on (not from when the coroutine first runs): nothing may be
        # dispatched there meanwhile, nor the host taken up again before the release is done.
        lease = self._held.pop(state.host, None)
        return self._release(state, lease[0] if lease is not None else None)

    async def _release(self, state: HostPoliteness, epoch: int | None) -> None:
        if epoch is None:
            return

        async def work(conn: Conn) -> None:
            cursor = await conn.execute(LOCK_HOST, (self._crawl, state.host))
            row = await cursor.fetchone()
            if row is None or row[0] != self._me or row[1] != epoch:
                return  # lost meanwhile: the new owner's now
            await conn.execute(GIVE_BACK, (self._crawl, state.host))
            await conn.execute(RELEASE, self._release_params(state))

        await self._db.run(work, on="hosts", label="release")

    def _release_params(self, state: HostPoliteness) -> dict[str, Any]:
        return {
            "crawl": self._crawl,
            "host": state.host,
            "wait": max(0.0, state.wait),
            "delay": state.delay,
            "concurrency": state.concurrency,
            "crawl_delay": state.crawl_delay,
            "backoff": state.backoff,
        }

    async def remember_robots(self, host: str, record: str) -> None:
        async def work(conn: Conn) -> None:
            await conn.execute(
                "UPDATE hosts SET robots = %s WHERE crawl_id = %s AND host = %s",
                (record, self._crawl, host),
            )

        await self._db.run(work, on="hosts")

    async def over(self) -> bool:
        return bool(await self._db.scalar(OVER, {"crawl": self._crawl}, on="hosts"))

    async def close(self, status: str) -> None:
        """Everything this worker still holds goes back (its unstored URLs to pending)."""
        self._held.clear()

        async def work(conn: Conn) -> None:
            cursor = await conn.execute(
                "SELECT host FROM hosts WHERE crawl_id = %s AND owner = %s ORDER BY host "
                "FOR UPDATE",
                (self._crawl, self._me),
            )
            for (host,) in await cursor.fetchall():
                await conn.execute(GIVE_BACK, (self._crawl, host))
                await conn.execute(
                    "UPDATE hosts SET owner = NULL, lease_until = NULL, pending = EXISTS ("
                    "  SELECT 1 FROM frontier WHERE crawl_id = %(crawl)s AND host = %(host)s "
                    "  AND state = 0) WHERE crawl_id = %(crawl)s AND host = %(host)s",
                    {"crawl": self._crawl, "host": host},
                )
            if self._registered:
                await conn.execute(
                    "UPDATE workers SET status = %s, finished_at = %s "
                    "WHERE crawl_id = %s AND id = %s",
                    (status, utc_now(), self._crawl, self._me),
                )

        await self._db.run(work, on="hosts")

    async def _register(self) -> None:
        if self._registered:
            return
        self._registered = True

        async def work(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO workers (crawl_id, id, started_at, status) "
                "VALUES (%s, %s, %s, 'running') ON CONFLICT (crawl_id, id) DO NOTHING",
                (self._crawl, self._me, utc_now()),
            )

        await self._db.run(work, on="hosts")
