"""The connection to a PostgreSQL database for one crawl process: schema check and migrations,
two connections, and transactions that finish even when the task awaiting them is cancelled.

Three connections, so a lease never waits behind the sink's transaction (SQLite has one writer
anyway and shares one): `write` carries the page writer's batches and the crawls table, `lease`
the frontier's leases and counts, `hosts` the host leases (leases.py). A connection serves one
task at a time (a lock each). Every unit of work runs in a task of its own, shielded: a crawl
cancelled mid-transaction waits for it
to commit or roll back, and the connection is never left in the middle of a statement.

A database is ours when it has the `scraper_schema` table; one with other tables and not that one
belongs to another program, and one of a newer schema to a newer scraper: both are refused
before anything is written. Migrations run in one transaction under an advisory lock, so workers
starting together migrate once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from scraper.errors import DatabaseBack, StorageError
from scraper.store.location import password_of, redact
from scraper.store.opened import Opened
from scraper.store.postgres.errors import explain_pg
from scraper.store.postgres.outage import (
    FIRST_WAIT,
    GOING_AWAY,
    connection_lost,
    is_restarting,
    next_wait,
)
from scraper.store.postgres.schema import APPLICATION, MIGRATIONS, SCHEMA_VERSION

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]
Params = Sequence[Any] | Mapping[str, Any]

# Advisory lock keys (two int4: this class, then an id). A crawl process holds (CRAWL_LOCK,
# crawl id) for as long as it works on the crawl: the server releases it when the session ends,
# kill -9 included, so "is anyone crawling this?" has a true answer (see reads.py).
CRAWL_LOCK = 0x5343  # "SC"
MIGRATION_LOCK = 0x5344
GROUP_LOCK = 0x5345  # (GROUP_LOCK, hashtext(domain)): a claim of a domain's hosts (leases.py)
CONNECT_TIMEOUT = 10  # seconds, unless the URL says (connect_timeout=...)
DEADLOCK_TRIES = 3
log = logging.getLogger(__name__)


def connect_options(url: str) -> dict[str, Any]:
    """What every connection of ours adds to the URL's own parameters."""
    options: dict[str, Any] = {"application_name": "scraper"}
    try:
        given = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StorageError(f"{redact(url)}: not a valid PostgreSQL URL: {exc}") from exc
    if "connect_timeout" not in given:
        options["connect_timeout"] = CONNECT_TIMEOUT
    return options


class Timings:
    """How long each kind of transaction took (the sink's, the leases'), for the log at the end
    (`make bench-scale` reads it): a bounded sample of each, and its count."""

    KEEP = 20_000

    def __init__(self) -> None:
        self._seen: dict[str, list[float]] = {}
        self._count: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(self._count)

    def add(self, label: str, seconds: float) -> None:
        seen = self._seen.setdefault(label, [])
        if len(seen) < self.KEEP:
            seen.append(seconds)
        self._count[label] = self._count.get(label, 0) + 1

    def as_json(self) -> str:
        out = {}
        for label, seen in self._seen.items():
            ordered = sorted(seen)
            rank = max(0, math.ceil(0.99 * len(ordered)) - 1)
            out[label] = {
                "n": self._count[label],
                "p50_ms": round(statistics.median(ordered) * 1000, 2),
                "p99_ms": round(ordered[rank] * 1000, 2),
                "max_ms": round(ordered[-1] * 1000, 2),
            }
        return json.dumps(out, sort_keys=True)


class PgDatabase(Opened):
    """`async with PgDatabase(url) as db:` connects (creating or migrating the schema).

    A lost connection is a pause (`storage.reconnect_timeout` seconds at most; 0: an error at
    once): the unit of work that found it out waits while one task connects again with backoff
    (outage.py), and so does every unit that comes meanwhile. Once the connections are back, the
    hooks registered with `on_back` run (in their order, before anything else: the crawl's
    advisory lock taken again, the host leases checked), and then the units go on: each is run
    again from its start, but for one run with `again=False`, which gets DatabaseBack instead
    (it finds out itself whether its transaction committed: the page writer does). Past the
    timeout every unit, the waiting ones and those to come, gets one StorageError."""

    def __init__(self, url: str, setup: Sequence[str] = (), reconnect_timeout: float = 0.0) -> None:
        self.url = url
        self._setup = setup  # statements run on each connection once it is ready
        self.location = redact(url)
        self.secret = password_of(url)
        self._conns: dict[str, Conn] = {}
        self._locks = {name: asyncio.Lock() for name in ("write", "lease", "hosts")}
        self.timings = Timings()
        self._reconnect_timeout = reconnect_timeout
        self._on_back: list[Callable[[], Awaitable[None]]] = []
        self._reconnecting: asyncio.Task[None] | None = None  # the one task that connects again
        self._away_since: float | None = None  # loop time the outage began
        self._gave_up: StorageError | None = None
        self.outages = 0  # connections lost and got back
        self._server_started: object = None  # when the server we are connected to started

    @property
    def away(self) -> float | None:
        """Seconds since the database was lost, while reconnecting; None while connected."""
        if self._away_since is None:
            return None
        return asyncio.get_running_loop().time() - self._away_since

    def on_back(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run `hook` after each reconnection, before any other unit of work."""
        self._on_back.append(hook)

    async def open(self) -> None:
        try:
            await self._connect_patiently()
            await prepare(self._conns["write"], self.location)
            await self._set_up()
        except psycopg.Error as exc:
            raise StorageError(
                f"{self.location}: cannot open the database: {explain_pg(exc, self.secret)}"
            ) from exc

    async def _connect_patiently(self) -> None:
        """Connect; while the server says it is starting up or shutting down (a restart: a
        worker started beside it), wait for it as for a lost connection, through the moments
        it refuses connections once it has said so. Any other failure (no server there, a wrong
        password) is one line at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._reconnect_timeout
        wait, restarting = FIRST_WAIT, False
        while True:
            try:
                await self._connect()
                return
            except psycopg.Error as exc:
                await self._close_all()
                if not restarting and is_restarting(exc):
                    restarting = True
                    log.warning(
                        "%s: the database is restarting (%s); waiting for it up to %g s "
                        "(storage.reconnect_timeout)",
                        self.location, explain_pg(exc, self.secret), self._reconnect_timeout,
                    )  # fmt: skip
                if not restarting or loop.time() + wait >= deadline:
                    raise
            await asyncio.sleep(wait)
            wait = next_wait(wait)

    async def _close_all(self) -> None:
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            with contextlib.suppress(psycopg.Error):  # (a broken one has nothing to say)
                await conn.close()

    async def _connect(self) -> None:
        for name in self._locks:
            self._conns[name] = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, **connect_options(self.url)
            )
        cursor = await self._conns["write"].execute("SELECT pg_postmaster_start_time()")
        row = await cursor.fetchone()
        self._server_started = row[0] if row else None

    async def _set_up(self) -> None:
        for conn in self._conns.values():
            for statement in self._setup:
                await conn.execute(statement)

    async def close(self) -> None:
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StorageError):
                await self._reconnecting
        if self.timings:
            log.info("postgresql timings %s", self.timings.as_json())
        await self._close_all()

    def error(self, exc: psycopg.Error, doing: str = "write") -> StorageError:
        return StorageError(f"{self.location}: cannot {doing}: {explain_pg(exc, self.secret)}")

    async def run(
        self,
        work: Callable[[Conn], Awaitable[T]],
        *,
        on: str = "write",
        transaction: bool = True,
        label: str | None = None,
        again: bool = True,
    ) -> T:
        """`work(conn)` on connection `on`, in one transaction (or statement by statement), to
        its end even if the caller is cancelled; a database error becomes a StorageError.
        `label`: time it under this name (`timings`), from its lock to its commit. A lost
        connection: run again once it is back (`again`), or DatabaseBack."""

        async def unit() -> T:
            while True:
                await self._until_connected()
                async with self._locks[on]:
                    if self._paused():
                        continue  # lost meanwhile, by another unit: wait with the rest
                    lost = await self._attempt(work, on, transaction, label)
                    if not isinstance(lost, _Lost):
                        return lost
                await self._reconnect(lost.cause)
                if not again:
                    raise DatabaseBack(f"{self.location}: the connection was lost mid-work")

        task = asyncio.ensure_future(unit())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await task  # finish (commit or roll back) what was begun, then stay cancelled
            raise

    async def _attempt(
        self,
        work: Callable[[Conn], Awaitable[T]],
        on: str,
        transaction: bool,
        label: str | None,
    ) -> T | _Lost:
        began = time.perf_counter()
        conn = self._conns.get(on)
        assert conn is not None, "PgDatabase used outside `async with`"
        try:
            for attempt in range(1, DEADLOCK_TRIES + 1):
                try:
                    if not transaction:
                        return await work(conn)
                    async with conn.transaction():
                        return await work(conn)
                except psycopg.errors.DeadlockDetected as exc:
                    # Our transactions take rows in one order (leases.py), so this should
                    # not happen; if it does, the server rolled one back: do it again.
                    if attempt == DEADLOCK_TRIES:
                        raise self.error(exc) from exc
                    log.warning("%s: deadlock detected; retrying (%d)", self.location, attempt)
                except psycopg.Error as exc:
                    if connection_lost(exc, conn):
                        if _RECONNECTING.get():
                            raise  # a hook's: the reconnecting task tries again
                        return _Lost(exc)
                    raise self.error(exc) from exc
            raise AssertionError("unreachable")
        finally:
            if label is not None:
                self.timings.add(label, time.perf_counter() - began)

    def _paused(self) -> bool:
        """Must a unit wait: the database is being got back (and this is not its hooks)?"""
        return self._reconnecting is not None and not _RECONNECTING.get()

    async def _until_connected(self) -> None:
        while True:
            if self._gave_up is not None:
                raise self._gave_up
            if not self._paused():
                return
            assert self._reconnecting is not None
            with contextlib.suppress(StorageError):
                await asyncio.shield(self._reconnecting)  # (its error: _gave_up, above)

    async def _reconnect(self, cause: psycopg.Error) -> None:
        """Wait for the database to come back (the first unit to find it gone starts the task
        that gets it back); a StorageError past storage.reconnect_timeout."""
        if self._gave_up is not None:
            raise self._gave_up
        if self._reconnect_timeout <= 0:
            self._gave_up = self.error(cause)
            raise self._gave_up from cause
        if self._reconnecting is None:
            self._reconnecting = asyncio.create_task(self._get_back(cause), name="reconnect")
        await self._until_connected()

    async def _get_back(self, cause: psycopg.Error) -> None:
        loop = asyncio.get_running_loop()
        self._away_since = began = loop.time()
        log.warning(
            "%s: lost the database (%s); paused, reconnecting for up to %g s "
            "(storage.reconnect_timeout)",
            self.location, explain_pg(cause, self.secret), self._reconnect_timeout,
        )  # fmt: skip
        _RECONNECTING.set(True)  # (this task's context: its hooks' units do not wait for it)
        deadline = began + self._reconnect_timeout
        wait = FIRST_WAIT
        last: psycopg.Error = cause
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._connect_again()
                    break
                except psycopg.Error as exc:
                    if not connection_lost(exc, None) and not isinstance(exc, GOING_AWAY):
                        raise
                    last = exc
                except TimeoutError:
                    pass
                if loop.time() + wait >= deadline:
                    self._gave_up = StorageError(
                        f"{self.location}: the database did not come back within "
                        f"{self._reconnect_timeout:g} s (storage.reconnect_timeout): "
                        f"{explain_pg(last, self.secret)}; run the same command again to resume"
                    )
                    raise self._gave_up from last
                await asyncio.sleep(wait)
                wait = next_wait(wait)
        except psycopg.Error as exc:  # not a lost connection: the hooks' work failed
            self._gave_up = self.error(exc)
            raise self._gave_up from exc
        except StorageError as exc:
            self._gave_up = exc
            raise
        finally:
            self._reconnecting = None
            self._away_since = None
        self.outages += 1
        log.warning("%s: back on the database after %.1f s", self.location, loop.time() - began)

    async def _end_sessions(self, pids: list[int]) -> None:
        """The old sessions' server processes, ended before anything is looked up: a connection
        cut between here and the server (a pooler, a proxy) leaves its session running a while,
        and a transaction of it could still commit after the page writer found it had not (a
        batch written twice, seen in the tests)."""
        conn = self._conns["write"]
        while pids:
            cursor = await conn.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = ANY(%s)",
                (pids,),
            )
            pids = [int(pid) for pid, _ in await cursor.fetchall()]
            if pids:
                await asyncio.sleep(FIRST_WAIT)

    async def _connect_again(self) -> None:
        """New connections for the broken ones, set up as at the start, then the hooks. A
        connection is closed only under its lock: a unit may still be waiting on it (it fails
        as its socket closes), and libpq's connection freed under a wait crashed the process
        (SIGSEGV)."""
        async with contextlib.AsyncExitStack() as held:
            for lock in self._locks.values():  # (units take one lock at a time: no deadlock)
                await held.enter_async_context(lock)
            old = [conn.info.backend_pid for conn in self._conns.values()]
            server_then = self._server_started
            await self._close_all()
            await self._connect()
            await self._set_up()
            if self._server_started == server_then:  # (a server restarted ended them all,
                await self._end_sessions(old)  # and its pids are others' now)
        for hook in self._on_back:
            await hook()

    async def fetchall(
        self,
        sql: str,
        params: Params = (),
        *,
        on: str = "lease",
        transaction: bool = False,
        label: str | None = None,
    ) -> list[tuple[Any, ...]]:
        async def query(conn: Conn) -> list[tuple[Any, ...]]:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

        return await self.run(query, on=on, transaction=transaction, label=label)

    async def scalar(self, sql: str, params: Params = (), *, on: str = "lease") -> Any:
        rows = await self.fetchall(sql, params, on=on)
        return rows[0][0] if rows else None


@dataclass(frozen=True, slots=True)
class _Lost:
    """A unit's work found the connection lost (`cause`)."""

    cause: psycopg.Error


# Set in the reconnecting task (and so in its hooks' units): they run while others wait.
_RECONNECTING: contextvars.ContextVar[bool] = contextvars.ContextVar("reconnecting", default=False)


async def prepare(conn: Conn, location: str) -> None:
    """Check that the database is ours (or empty) and not newer; migrate it to SCHEMA_VERSION."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (MIGRATION_LOCK,))
        version = await schema_version(conn, location)
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(script.encode())  # no parameters: the script's statements, as is
            await conn.execute(
                "UPDATE scraper_schema SET version = %s WHERE application = %s",
                (number, APPLICATION),
            )


async def schema_version(conn: Conn, location: str) -> int:
    """The schema version of the database (0: empty); a StorageError if it is not ours or newer."""
    cursor = await conn.execute(
        "SELECT to_regclass('scraper_schema') IS NOT NULL, "
        "(SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'p', 'm'))"
    )
    row = await cursor.fetchone()
    assert row is not None
    ours, relations = row
    version = 0
    if ours:
        cursor = await conn.execute("SELECT application, version FROM scraper_schema")
        marks = await cursor.fetchall()
        ours = len(marks) == 1 and marks[0][0] == APPLICATION
        version = int(marks[0][1]) if ours else 0
    if relations and not ours:
        raise StorageError(
            f"{location}: not a scraper database (it holds other tables); "
            "choose another database (or schema) for storage.db"
        )
    return check_version(version, location)


def check_version(version: int, location: str) -> int:
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"{location}: written by a newer scraper (schema {version}, "
            f"this one knows {SCHEMA_VERSION}); upgrade scraper"
        )
    return version
