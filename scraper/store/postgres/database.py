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
import json
import logging
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from scraper.errors import StorageError
from scraper.store.location import password_of, redact
from scraper.store.opened import Opened
from scraper.store.postgres.errors import explain_pg
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
    """`async with PgDatabase(url) as db:` connects (creating or migrating the schema)."""

    def __init__(self, url: str, setup: Sequence[str] = ()) -> None:
        self.url = url
        self._setup = setup  # statements run on each connection once it is ready
        self.location = redact(url)
        self.secret = password_of(url)
        self._conns: dict[str, Conn] = {}
        self._locks = {name: asyncio.Lock() for name in ("write", "lease", "hosts")}
        self.timings = Timings()

    async def open(self) -> None:
        try:
            for name in self._locks:
                self._conns[name] = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, **connect_options(self.url)
                )
            await prepare(self._conns["write"], self.location)
            for conn in self._conns.values():
                for statement in self._setup:
                    await conn.execute(statement)
        except psycopg.Error as exc:
            raise StorageError(
                f"{self.location}: cannot open the database: {explain_pg(exc, self.secret)}"
            ) from exc

    async def close(self) -> None:
        if self.timings:
            log.info("postgresql timings %s", self.timings.as_json())
        conns, self._conns = self._conns, {}
        for conn in conns.values():
            await conn.close()

    def error(self, exc: psycopg.Error, doing: str = "write") -> StorageError:
        return StorageError(f"{self.location}: cannot {doing}: {explain_pg(exc, self.secret)}")

    async def run(
        self,
        work: Callable[[Conn], Awaitable[T]],
        *,
        on: str = "write",
        transaction: bool = True,
        label: str | None = None,
    ) -> T:
        """`work(conn)` on connection `on`, in one transaction (or statement by statement), to
        its end even if the caller is cancelled; a database error becomes a StorageError.
        `label`: time it under this name (`timings`), from its lock to its commit."""

        async def unit() -> T:
            async with self._locks[on]:
                if label is not None:
                    began = time.perf_counter()
                    try:
                        return await attempts()
                    finally:
                        self.timings.add(label, time.perf_counter() - began)
                return await attempts()

        async def attempts() -> T:
            conn = self._conns.get(on)
            assert conn is not None, "PgDatabase used outside `async with`"
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
                    raise self.error(exc) from exc
            raise AssertionError("unreachable")

        task = asyncio.ensure_future(unit())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await task  # finish (commit or roll back) what was begun, then stay cancelled
            raise

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
