"""Which PostgreSQL driver, and which bulk path, for the sink's transaction and the leases.

    python -m bench.pg_drivers [--batches 30]     (asyncpg measured if installed)

On a throwaway server (pgserver.py, PostgreSQL's defaults: fsync on), with the real schema, it
times one sink transaction (200 pages upserted, ~2,000 discovered URLs inserted once of which
half are known already, the 200 pages' own frontier rows marked done) by each way of sending it,
and a lease round trip (16 pending URLs of a host, marked leased, with their stored pages'
validators). Prints the median and p90 in milliseconds. docs/benchmarks.md keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from scraper.store.postgres.schema import MIGRATIONS
from scraper.store.rows import PAGE_COLUMNS
from tests.pgserver import PgServer

PAGES = 200
LINKS = 10  # new URLs per page sent to the frontier (after the seen-cache)
HOSTS = 20

UPSERT = (
    f"INSERT INTO pages ({', '.join(PAGE_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(PAGE_COLUMNS))}) "
    "ON CONFLICT ((md5(url))) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in PAGE_COLUMNS[1:])
)
INSERT_ONE = (
    "INSERT INTO frontier (crawl_id, url, host, depth, referrer, hops) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
INSERT_ARRAYS = (
    "INSERT INTO frontier (crawl_id, url, host, depth, referrer, hops) "
    "SELECT %s::bigint, * FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[], %s::int[]) "
    "ORDER BY 1 ON CONFLICT DO NOTHING"
)
DONE_ONE = "UPDATE frontier SET state = 2 WHERE crawl_id = %s AND md5(url) = md5(%s) AND url = %s"
DONE_ARRAY = (
    "UPDATE frontier f SET state = 2 FROM unnest(%s::text[]) u(url) "
    "WHERE f.crawl_id = %s AND md5(f.url) = md5(u.url) AND f.url = u.url"
)
LEASE = (
    "WITH leased AS (UPDATE frontier f SET state = 1 FROM (SELECT seq FROM frontier "
    " WHERE crawl_id = %s AND host = %s AND state = 0 ORDER BY seq LIMIT %s "
    " FOR UPDATE SKIP LOCKED) s WHERE f.seq = s.seq "
    " RETURNING f.seq, f.url, f.depth, f.referrer, f.hops) "
    "SELECT l.seq, l.url, l.depth, l.referrer, l.hops, p.etag, p.last_modified "
    "FROM leased l LEFT JOIN pages p ON md5(p.url) = md5(l.url) AND p.url = l.url ORDER BY l.seq"
)


def batch(n: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[str]]:
    """Batch n: its pages' rows, the URLs they discovered (half seen in batch n-1), own URLs."""
    own = [f"http://127.0.0.{n % HOSTS + 2}:8000/p/{n}/{i}" for i in range(PAGES)]
    links = json.dumps([f"http://127.0.0.2:8000/l/{i}" for i in range(45)])
    pages = [
        (url, 1, 2, own[0], 200, None, "text/html", "2026-01-01T00:00:00.000+00:00", 12.5,
         40_000, 1, "utf-8", "a title " * 5, "a description " * 10, None, 20_000, "ab" * 32,
         None, "{}", None, None, '"etag"', None, links, 0)
        for url in own
    ]  # fmt: skip
    found = [
        (f"http://127.0.0.{(n + i) % HOSTS + 2}:8000/f/{n - (i % 2)}/{i}", 2, own[0], 0)
        for i in range(PAGES * LINKS)
    ]
    return pages, [(u, u.split("/")[2], d, r, h) for u, d, r, h in found], own


async def psycopg_way(url: str, way: str, batches: int) -> list[float]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        times = []
        for n in range(1, batches + 1):
            pages, found, own = batch(n)
            start, cpu = time.perf_counter(), time.process_time()
            async with conn.transaction():
                cur = conn.cursor()
                if way == "copy-all":
                    await _copy_pages(cur, pages)
                else:
                    await cur.executemany(UPSERT, pages)
                if way == "executemany":
                    await cur.executemany(INSERT_ONE, [(1, *f) for f in sorted(found)])
                    await cur.executemany(DONE_ONE, [(1, u, u) for u in own])
                elif way == "arrays":
                    cols = list(zip(*sorted(found), strict=True))
                    await cur.execute(INSERT_ARRAYS, (1, *map(list, cols)))
                    await cur.execute(DONE_ARRAY, (own, 1))
                else:  # copy, copy-all
                    await cur.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS found (url text, host text, depth int, "
                        "referrer text, hops int) ON COMMIT DELETE ROWS"
                    )
                    async with cur.copy("COPY found FROM STDIN") as copy:
                        for row in found:
                            await copy.write_row(row)
                    await cur.execute(
                        "INSERT INTO frontier (crawl_id, url, host, depth, referrer, hops) "
                        "SELECT 1, * FROM found ORDER BY url ON CONFLICT DO NOTHING"
                    )
                    await cur.execute(DONE_ARRAY, (own, 1))
            times.append(time.perf_counter() - start)
            CPU.append(time.process_time() - cpu)
        return times


async def _copy_pages(cur: psycopg.AsyncCursor[Any], pages: list[tuple[Any, ...]]) -> None:
    columns = ", ".join(PAGE_COLUMNS)
    await cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS new_pages ON COMMIT DELETE ROWS "
        f"AS SELECT {columns} FROM pages WITH NO DATA"
    )
    async with cur.copy(f"COPY new_pages ({columns}) FROM STDIN") as copy:
        for row in pages:
            await copy.write_row(row)
    await cur.execute(
        f"INSERT INTO pages ({columns}) SELECT {columns} FROM new_pages ORDER BY url "
        "ON CONFLICT ((md5(url))) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in PAGE_COLUMNS[1:])
    )


async def asyncpg_way(url: str, way: str, batches: int) -> list[float]:
    import asyncpg  # type: ignore[import-not-found]  # measured only when installed

    dollar = _dollars
    conn = await asyncpg.connect(url)
    try:
        times = []
        for n in range(1, batches + 1):
            pages, found, own = batch(n)
            start, cpu = time.perf_counter(), time.process_time()
            async with conn.transaction():
                await conn.executemany(dollar(UPSERT), pages)
                if way == "executemany":
                    await conn.executemany(dollar(INSERT_ONE), [(1, *f) for f in sorted(found)])
                    await conn.executemany(dollar(DONE_ONE), [(1, u, u) for u in own])
                else:
                    cols = list(zip(*sorted(found), strict=True))
                    await conn.execute(dollar(INSERT_ARRAYS), 1, *map(list, cols))
                    await conn.execute(dollar(DONE_ARRAY), own, 1)
            times.append(time.perf_counter() - start)
            CPU.append(time.process_time() - cpu)
        return times
    finally:
        await conn.close()


def _dollars(sql: str) -> str:
    parts = sql.split("%s")
    return "".join(f"{p}${i}" for i, p in enumerate(parts[:-1], 1)) + parts[-1]


async def leases(url: str, driver: str, rounds: int) -> list[float]:
    times = []
    if driver == "psycopg":
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            for n in range(rounds):
                start, cpu = time.perf_counter(), time.process_time()
                cur = await conn.execute(LEASE, (1, f"127.0.0.{n % HOSTS + 2}:8000", 16))
                await cur.fetchall()
                times.append(time.perf_counter() - start)
                CPU.append(time.process_time() - cpu)
        return times
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        for n in range(rounds):
            start, cpu = time.perf_counter(), time.process_time()
            await conn.fetch(_dollars(LEASE), 1, f"127.0.0.{n % HOSTS + 2}:8000", 16)
            times.append(time.perf_counter() - start)
            CPU.append(time.process_time() - cpu)
    finally:
        await conn.close()
    return times


CPU: list[float] = []  # this process's CPU time per transaction: what the crawl's loop pays


def _summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    cpu = statistics.median(CPU[-len(times) :]) * 1000
    CPU.clear()
    return (
        f"median {statistics.median(ms):7.1f} ms   p90 {ms[int(len(ms) * 0.9)]:7.1f} ms   "
        f"client CPU {cpu:5.1f} ms"
    )


async def main_async(batches: int) -> None:
    try:
        import asyncpg  # noqa: F401

        drivers = ["psycopg", "asyncpg"]
    except ModuleNotFoundError:
        drivers = ["psycopg"]
    with PgServer(durable=True) as server:
        runs: list[tuple[str, Callable[[str], Awaitable[list[float]]]]] = [
            ("psycopg  executemany (pipeline)", lambda u: psycopg_way(u, "executemany", batches)),
            ("psycopg  arrays (unnest)", lambda u: psycopg_way(u, "arrays", batches)),
            ("psycopg  COPY + INSERT SELECT", lambda u: psycopg_way(u, "copy", batches)),
            ("psycopg  COPY, pages too", lambda u: psycopg_way(u, "copy-all", batches)),
        ]
        if "asyncpg" in drivers:
            runs += [
                ("asyncpg  executemany", lambda u: asyncpg_way(u, "executemany", batches)),
                ("asyncpg  arrays (unnest)", lambda u: asyncpg_way(u, "arrays", batches)),
            ]
        print(f"sink transaction: {PAGES} pages, {PAGES * LINKS} discovered URLs, {PAGES} done")
        for i, (name, run) in enumerate(runs):
            url = server.address.create_database(f"sink{i}")
            with psycopg.connect(url, autocommit=True) as conn:
                for script in MIGRATIONS:
                    conn.execute(script.encode())
                conn.execute(
                    "INSERT INTO crawls (started_at, status, seeds, config) "
                    "VALUES ('now', 'running', '[]', '{}')"
                )
            times = await run(url)
            print(f"  {name:34} {_summary(times[2:])}")  # the first two warm the caches
            if i == 0:
                for driver in drivers:
                    lease = await leases(url, driver, 200)
                    print(f"  lease round trip, {driver:24} {_summary(lease[10:])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=30)
    asyncio.run(main_async(parser.parse_args().batches))


if __name__ == "__main__":
    main()
