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
A worker stopped (Ctrl-C) cancels its requests first, then releases every host with its state
(`close`), so the next owner starts no request while one of the old owner's is on the wire.

With fetch.politeness_key = "domain" (`FleetRules.by_domain`) the unit of a claim is a
registrable domain (`hosts.grp`): no process claims a host of a domain in which another holds
a live lease (CLAIM_GROUPS), so a domain's slot has one owner at a time, and its next owner
starts from the domain's latest next start.

Page limits (`FleetRules`: crawl.max_pages, crawl.max_pages_per_host) count for the whole crawl:
frontier.py counts URLs out of `crawl_rules` and `hosts.taken` as it leases them, and every
give-back here (release, close, the claim of an expired lease) counts them back in, so the
counts are exactly the URLs leased or done in this run. A host at its cap is `capped` (not
pending: no claim takes it for its URLs); with the crawl's budget spent, claims take only
expired leases (to give their URLs back), and the crawl is over once nothing is leased.

`hosts.pending` says whether a host may have pending URLs. It may be true with none (a claim
then finds nothing and releases), but it is never false while some exist (but for a capped
host): a batch that inserts URLs takes its hosts' rows first (an upsert, in host order:
frontier.py `mark_hosts`), and a release takes the row before it looks (a second statement, so
it sees what such a batch committed while it waited).

Deadlocks: every transaction takes rows in one order: hosts rows (in host order; claims skip
locked ones), then frontier rows, then the crawl's `crawl_rules` row. A counted lease takes
the budget row before its frontier rows, but those it takes with SKIP LOCKED, waiting for none
while it holds the budget. A deadlock the server still detects is retried (database.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Coroutine, Sequence
from typing import Any

from scraper.store.base import NO_RULES, FleetRules, HostPoliteness, utc_now
from scraper.store.postgres.database import CRAWL_LOCK, GROUP_LOCK, Conn, PgDatabase

# A host may be claimed when it is unowned with pending URLs, or its lease expired (its leased
# URLs then go back to pending). Once the crawl's page budget is spent, only the latter: what a
# dead process held must come back, whether or not there is budget to fetch it.
CLAIMABLE = """
    crawl_id = %(crawl)s AND (owner IS NULL OR lease_until < now())
    AND (pending OR owner IS NOT NULL)
    AND (owner IS NOT NULL OR %(max_pages)s = 0
         OR coalesce((SELECT taken FROM crawl_rules WHERE crawl_id = %(crawl)s), 0)
            < %(max_pages)s)
"""
# The hosts claimed: taken, their leased URLs given back (counted back into the budgets by
# the caller), and their politeness state returned. `{candidates}`: which hosts.
CLAIM_HOSTS = """
WITH candidates AS ({candidates}), given_back AS (
    UPDATE frontier f SET state = 0 FROM candidates c
    WHERE f.crawl_id = %(crawl)s AND f.state = 1 AND f.host = c.host
    RETURNING f.host
), back AS (SELECT host, count(*) AS n FROM given_back GROUP BY host)
UPDATE hosts h SET owner = %(me)s, lease_until = now() + make_interval(secs => %(ttl)s),
    epoch = h.epoch + 1, pending = true
FROM candidates c LEFT JOIN back b ON b.host = c.host
WHERE h.crawl_id = %(crawl)s AND h.host = c.host
RETURNING h.host, h.epoch, greatest(0, extract(epoch FROM {next_start} - now()))::float8,
    h.delay, h.concurrency, h.crawl_delay, h.backoff, h.robots, h.cookies, coalesce(b.n, 0)
"""
CLAIM = CLAIM_HOSTS.format(
    candidates=f"SELECT host FROM hosts WHERE {CLAIMABLE} "
    "ORDER BY next_start LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
    next_start="h.next_start",
)
# fetch.politeness_key = "domain": hosts are claimed a registrable domain (`grp`) at a time, so
# one process at a time sends requests to a domain's hosts. First the groups of the next ready
# hosts, each under a transaction advisory lock (taken without waiting: a group another claim
# is taking is skipped), then, in a statement of its own (whose snapshot sees every claim that
# committed before those locks), the groups no other process holds a live lease in, and their
# claimable hosts. The next start is the group's latest: the last owner's slot was the group's.
GROUP_OF = "coalesce({0}.grp, {0}.host)"
# Another process holds a live lease in group {0} (a host's group: its `grp`, or itself).
HELD_BY_ANOTHER = """EXISTS (
    SELECT 1 FROM hosts o WHERE o.crawl_id = %(crawl)s
    AND (o.grp = {0} OR (o.grp IS NULL AND o.host = {0}))
    AND o.owner <> %(me)s AND o.lease_until >= now())"""
# (The scan skips the groups others hold, as this statement's snapshot sees them, so a domain
# of many ready hosts that another process holds does not fill it; the claim checks again.)
LOCK_GROUPS = f"""
SELECT DISTINCT g FROM (
    SELECT {GROUP_OF.format("h")} AS g FROM hosts h WHERE {CLAIMABLE}
    AND NOT {HELD_BY_ANOTHER.format(GROUP_OF.format("h"))}
    ORDER BY next_start LIMIT %(scan)s
) ready WHERE pg_try_advisory_xact_lock(%(lock)s, hashtext(g))
"""
CLAIM_GROUPS = CLAIM_HOSTS.format(
    candidates=f"""
    SELECT host FROM hosts WHERE {CLAIMABLE} AND {GROUP_OF.format("hosts")} IN (
        SELECT g FROM unnest(%(groups)s::text[]) AS u(g)
        WHERE NOT {HELD_BY_ANOTHER.format("u.g")}
        LIMIT %(limit)s
    ) ORDER BY host FOR UPDATE SKIP LOCKED""",
    next_start=f"""(SELECT max(x.next_start) FROM hosts x WHERE x.crawl_id = h.crawl_id
                    AND {GROUP_OF.format("x")} = {GROUP_OF.format("h")})""",
)
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
# URLs given back return to the budgets they were taken from (frontier.py counts them out).
UNCOUNT_HOST = """
UPDATE hosts SET taken = greatest(0, taken - %(n)s),
    capped = greatest(0, taken - %(n)s) >= %(cap)s
WHERE crawl_id = %(crawl)s AND host = %(host)s
"""
UNCOUNT_CRAWL = "UPDATE crawl_rules SET taken = greatest(0, taken - %s) WHERE crawl_id = %s"
HAS_PENDING = """NOT capped AND EXISTS (SELECT 1 FROM frontier
    WHERE crawl_id = %(crawl)s AND host = %(host)s AND state = 0)"""
RELEASE = f"""
UPDATE hosts SET owner = NULL, lease_until = NULL, pending = {HAS_PENDING},
    next_start = now() + make_interval(secs => %(wait)s),
    delay = %(delay)s, concurrency = %(concurrency)s, crawl_delay = %(crawl_delay)s,
    backoff = %(backoff)s
WHERE crawl_id = %(crawl)s AND host = %(host)s
"""
# A host let go with no politeness state to leave (close(), for a host the scheduler no longer
# holds): its row keeps the last one written.
LET_GO = f"""
UPDATE hosts SET owner = NULL, lease_until = NULL, pending = {HAS_PENDING}
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
# Over: nothing leased, no live lease, and nothing left to take: no pending URL (but those of
# hosts capped by crawl.max_pages_per_host), or the crawl's page budget spent.
OVER = """
SELECT (
    (%(max_pages)s > 0 AND coalesce((SELECT taken FROM crawl_rules
                                    WHERE crawl_id = %(crawl)s), 0) >= %(max_pages)s)
    OR NOT EXISTS ({pending}))
   AND NOT EXISTS (SELECT 1 FROM frontier WHERE crawl_id = %(crawl)s AND state = 1)
   AND NOT EXISTS (SELECT 1 FROM hosts WHERE crawl_id = %(crawl)s AND owner IS NOT NULL
                   AND lease_until > now())
"""
OVER_UNCAPPED = OVER.format(
    pending="SELECT 1 FROM frontier WHERE crawl_id = %(crawl)s AND state = 0"
)
# With a per-host cap, a capped host's pending URLs stay in the table: the hosts not capped
# that may have some (`pending`, never false while they do) are asked instead, so the look costs
# the hosts with work, not every URL the capped ones left.
OVER_CAPPED = OVER.format(
    pending="""SELECT 1 FROM hosts h WHERE h.crawl_id = %(crawl)s AND h.pending AND NOT h.capped
        AND EXISTS (SELECT 1 FROM frontier f WHERE f.crawl_id = %(crawl)s AND f.host = h.host
                    AND f.state = 0)"""
)


def worker_name() -> str:
    """This process, as `workers.id` and `hosts.owner` name it: machine, pid, and a nonce (a
    pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class PgHostLeases:
    """`HostLeases` (store/base.py) of one worker on one crawl."""

    shared = True

    def __init__(
        self,
        db: PgDatabase,
        crawl_id: int,
        worker: str,
        *,
        ttl: float,
        margin: float,
        rules: FleetRules = NO_RULES,
    ) -> None:
        self._db = db
        self._crawl = crawl_id
        self._me = worker
        self._ttl = ttl
        self._margin = margin
        self._rules = rules
        self._held: dict[str, tuple[int, float]] = {}  # host -> (epoch, valid until, loop time)
        self._registered = False
        # Released here and not yet written (a release's task runs later): what close() leaves
        # for these if that task is cancelled first (a stop), so their next start is not lost.
        self._releasing: dict[str, HostPoliteness] = {}

    @property
    def renew_every(self) -> float:
        return max(0.2, self._ttl / 6)

    @property
    def held(self) -> int:
        return len(self._held)

    def take(self, host: str) -> HostPoliteness | None:
        return None  # another process may hold it: only a claim can say

    def holds(self, host: str) -> bool:
        return host in self._held

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
        params = {
            "crawl": self._crawl,
            "limit": limit,
            "me": self._me,
            "ttl": self._ttl,
            "max_pages": self._rules.max_pages,
        }

        async def work(conn: Conn) -> list[tuple[Any, ...]]:
            if self._rules.by_domain:
                rows = await self._claim_groups(conn, params)
            else:
                rows = await (await conn.execute(CLAIM, params)).fetchall()
            await self._uncount(conn, {row[0]: int(row[-1]) for row in rows})
            return rows

        rows = await self._db.run(work, on="hosts", label="claim")
        grants = []
        for host, epoch, wait, delay, concurrency, crawl_delay, backoff, robots, jar, _ in rows:
            self._held[host] = (int(epoch), sent + self._ttl)
            grants.append(
                HostPoliteness(host, wait, delay, concurrency, crawl_delay, backoff, robots, jar)
            )
        return grants

    async def _claim_groups(self, conn: Conn, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Whole registrable domains (fetch.politeness_key = "domain"): see CLAIM_GROUPS."""
        cursor = await conn.execute(
            LOCK_GROUPS, {**params, "scan": 4 * params["limit"], "lock": GROUP_LOCK}
        )
        groups = [group for (group,) in await cursor.fetchall()]
        if not groups:
            return []
        cursor = await conn.execute(CLAIM_GROUPS, {**params, "groups": groups})
        return await cursor.fetchall()

    async def _give_back(self, conn: Conn, host: str) -> None:
        """The host's leased URLs back to pending (its row is locked), and to the budgets."""
        cursor = await conn.execute(GIVE_BACK, (self._crawl, host))
        await self._uncount(conn, {host: cursor.rowcount})

    async def _uncount(self, conn: Conn, given_back: dict[str, int]) -> None:
        """URLs given back to pending return to the budgets they were taken from: each host's
        (its row is locked already), then the crawl's (the lock order: leases.py's docstring)."""
        rules = self._rules
        if rules.max_pages_per_host:
            for host, count in sorted(given_back.items()):
                if count:
                    await conn.execute(
                        UNCOUNT_HOST,
                        {"n": count, "cap": rules.max_pages_per_host, "crawl": self._crawl,
                         "host": host},
                    )  # fmt: skip
        total = sum(given_back.values())
        if rules.max_pages and total:
            await conn.execute(UNCOUNT_CRAWL, (total, self._crawl))

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
        if lease is not None:
            self._releasing[state.host] = state
        return self._release(state, lease[0] if lease is not None else None)

    async def _release(self, state: HostPoliteness, epoch: int | None) -> None:
        if epoch is None:
            return
        try:
            await self._write_release(state, epoch)
        finally:
            if self._releasing.get(state.host) is state:
                del self._releasing[state.host]

    async def _write_release(self, state: HostPoliteness, epoch: int) -> None:

        async def work(conn: Conn) -> None:
            cursor = await conn.execute(LOCK_HOST, (self._crawl, state.host))
            row = await cursor.fetchone()
            if row is None or row[0] != self._me or row[1] != epoch:
                return  # lost meanwhile: the new owner's now
            await self._give_back(conn, state.host)
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

    async def remember_cookies(self, host: str, record: str) -> None:
        async def work(conn: Conn) -> None:
            await conn.execute(  # (the owner's only: a host taken over is its new owner's)
                "UPDATE hosts SET cookies = %s WHERE crawl_id = %s AND host = %s AND owner = %s",
                (record, self._crawl, host, self._me),
            )

        await self._db.run(work, on="hosts")

    async def over(self) -> bool:
        params = {"crawl": self._crawl, "max_pages": self._rules.max_pages}
        sql = OVER_CAPPED if self._rules.max_pages_per_host else OVER_UNCAPPED
        return bool(await self._db.scalar(sql, params, on="hosts"))

    async def close(self, status: str, left: Sequence[HostPoliteness] = ()) -> None:
        """Everything this worker still holds goes back (its unstored URLs to pending), each
        host with its politeness state when `left` has it."""
        self._held.clear()
        states = {**self._releasing, **{state.host: state for state in left}}

        async def work(conn: Conn) -> None:
            cursor = await conn.execute(
                "SELECT host FROM hosts WHERE crawl_id = %s AND owner = %s ORDER BY host "
                "FOR UPDATE",
                (self._crawl, self._me),
            )
            for (host,) in await cursor.fetchall():
                await self._give_back(conn, host)
                state = states.get(host)
                if state is not None:
                    await conn.execute(RELEASE, self._release_params(state))
                else:
                    await conn.execute(LET_GO, {"crawl": self._crawl, "host": host})
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
