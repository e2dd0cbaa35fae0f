"""The floor: a bare aiohttp + selectolax crawler, as short as a crawl loop gets.

    python -m bench.bare SEED --db out.db [--concurrency 64] [--parse-workers 2]

A queue, `concurrency` workers sharing one session, a set of seen URLs, parsing in a process pool
(or inline with `--parse-workers 0`) and a plain sqlite3 batch insert every 200 pages, written
from the loop. No retries, limits, robots or error handling beyond recording the failure: whatever
our crawler spends above this is the price of its features. The `pages` table has no unique key,
so a URL stored twice would show.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import aiohttp
from selectolax.lexbor import LexborHTMLParser
from yarl import URL

BATCH = 200
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS pages (url TEXT, status INTEGER, fetched_at REAL, title TEXT, "
    "description TEXT, price TEXT, links TEXT, error TEXT)"
)


def parse(url: str, body: bytes) -> dict[str, Any]:
    tree = LexborHTMLParser(body.decode("utf-8", "replace"))
    base = URL(url)
    links: dict[str, None] = {}
    for node in tree.css("a[href]"):
        link = base.join(URL(node.attributes.get("href") or "")).with_fragment(None)
        if link.scheme in ("http", "https"):
            links[str(link)] = None
    title = tree.css_first("title")
    description = tree.css_first('meta[name="description"]')
    price = tree.css_first("p.price")
    return {
        "title": title.text() if title else None,
        "description": description.attributes.get("content") if description else None,
        "price": price.text() if price else None,
        "links": list(links),
    }


async def crawl(seed: str, db: sqlite3.Connection, concurrency: int, workers: int) -> None:
    loop = asyncio.get_running_loop()
    pool = ProcessPoolExecutor(workers) if workers else None
    host = URL(seed).host
    seen, queue, rows = {seed}, asyncio.Queue[str](), list[tuple[Any, ...]]()
    queue.put_nowait(seed)

    def flush() -> None:
        db.executemany("INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.commit()
        rows.clear()

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            url = await queue.get()
            try:
                async with session.get(url) as response:
                    body, status = await response.read(), response.status
                fetched = time.time()
                if pool:
                    page = await loop.run_in_executor(pool, parse, url, body)
                else:
                    page = parse(url, body)
                for link in page["links"]:
                    if link not in seen and URL(link).host == host:
                        seen.add(link)
                        queue.put_nowait(link)
                row = (page["title"], page["description"], page["price"], json.dumps(page["links"]))
                rows.append((url, status, fetched, *row, None))
            except Exception as exc:
                rows.append((url, None, time.time(), None, None, None, None, repr(exc)))
            finally:
                if len(rows) >= BATCH:
                    flush()
                queue.task_done()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        await queue.join()
        for task in tasks:
            task.cancel()
    flush()
    if pool:
        pool.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A bare aiohttp + selectolax crawl loop.")
    parser.add_argument("seed")
    parser.add_argument("--db", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--parse-workers", type=int, default=2, help="0: parse inline")
    args = parser.parse_args(argv)
    db = sqlite3.connect(args.db)
    db.execute(SCHEMA)
    asyncio.run(crawl(str(URL(args.seed)), db, args.concurrency, args.parse_workers))
    db.close()


if __name__ == "__main__":
    main()
