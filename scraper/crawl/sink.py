"""The sink: PageRecords → SQLite, in batches, from one task.

Each transaction stores a batch of pages (each with its links), the URLs they discovered (into the
frontier) and marks the batch's own URLs done, so a crash at any instant loses nothing and repeats
nothing.

A batch commits per `storage.batch_size` records, per `storage.flush_interval` seconds, or at
one by one while the scheduler has nothing else to hand out (`set_eager`). A batch interrupted by
cancellation is finished before the task gives up.

`Sink` is the seam where another backend (PostgreSQL) stands in.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

from scraper.config import StorageConfig
from scraper.models import PageRecord
from scraper.store.sqlite.database import Database
from scraper.store.sqlite.frontier import MARK_DONE, insert_discovered

PAGE_COLUMNS = [
    "url", "crawl_id", "depth", "referrer", "status", "final_url", "content_type",
    "fetched_at", "elapsed_ms", "bytes", "attempts", "encoding", "title", "description",
    "canonical", "text_length", "text_hash", "text", "fields", "error_kind", "error", "etag",
    "last_modified", "links",
]  # fmt: skip
UPSERT_PAGE = (
    f"INSERT INTO pages ({', '.join(PAGE_COLUMNS)}) VALUES ({', '.join('?' * len(PAGE_COLUMNS))}) "
    "ON CONFLICT(url) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in PAGE_COLUMNS[1:])
)
# 304 Not Modified: the stored page stands; only when and by which crawl it was checked changes.
TOUCH_NOT_MODIFIED = (
    "UPDATE pages SET crawl_id = ?, fetched_at = ?, elapsed_ms = ?, attempts = ? WHERE url = ?"
)
TOUCH_FRESH = "UPDATE pages SET crawl_id = ? WHERE url = ?"

_FLUSH = object()  # put on the queue to ask for a commit now


class Sink(Protocol):
    writing: bool  # a transaction is under way (sampled for the crawl's stage counters)

    async def consume(self, queue: asyncio.Queue[Any]) -> None:
        """Store records from `queue` until it yields None."""
        ...

    def set_eager(self, eager: bool, queue: asyncio.Queue[Any]) -> None: ...


class SqliteSink:
    def __init__(
        self,
        db: Database,
        crawl_id: int,
        config: StorageConfig,
        on_stored: Callable[[list[PageRecord]], None] = lambda records: None,
    ) -> None:
        self._db = db
        self._crawl_id = crawl_id
        self._config = config
        self._on_stored = on_stored
        self._eager = False
        self.written = 0
        self.writing = False

    def set_eager(self, eager: bool, queue: asyncio.Queue[Any]) -> None:
        """Eager: commit each record as it comes (the crawl waits on them), not in batches."""
        self._eager = eager
        if eager and not queue.full():
            queue.put_nowait(_FLUSH)  # and commit what is held now

    async def consume(self, queue: asyncio.Queue[Any]) -> None:
        loop = asyncio.get_running_loop()
        batch: list[PageRecord] = []
        deadline = 0.0
        ended = False
        try:
            while not ended:
                try:
                    async with asyncio.timeout_at(deadline if batch else None):
                        item = await queue.get()
                except TimeoutError:
                    await self._flush(batch)
                    continue
                while True:  # take what is already queued, up to a batch
                    if item is None:
                        ended = True
                        break
                    if item is _FLUSH:
                        await self._flush(batch)
                    else:
                        if not batch:
                            deadline = loop.time() + self._config.flush_interval
                        batch.append(item)
                        if len(batch) >= self._config.batch_size:
                            await self._flush(batch)
                    if queue.empty():
                        if self._eager:
                            await self._flush(batch)
                        break
                    item = queue.get_nowait()
            await self._flush(batch)
        except asyncio.CancelledError:
            # Keep what reached us: store the batch and whatever is already queued, then stop.
            while not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, PageRecord):
                    batch.append(item)
            await self._flush(batch)
            raise

    async def _flush(self, batch: list[PageRecord]) -> None:
        if not batch:
            return
        records = list(batch)
        batch.clear()
        self.writing = True
        write = asyncio.ensure_future(self._write(records))
        write.add_done_callback(self._done_writing)
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await write  # finish the transaction already begun, then go on being cancelled
            raise
        self._on_stored(records)

    def _done_writing(self, _: object) -> None:
        self.writing = False

    async def _write(self, records: list[PageRecord]) -> None:
        crawl = self._crawl_id
        full = [r for r in records if not _kept(r)]
        not_modified = [r.fetch for r in records if r.fetch.status == 304]
        fresh = [r.fetch.request.url for r in records if r.fetch.request.fresh]
        async with self._db.transaction() as conn:
            await conn.executemany(UPSERT_PAGE, [_page_row(crawl, r) for r in full])
            await conn.executemany(
                TOUCH_NOT_MODIFIED,
                [
                    (crawl, f.fetched_at, f.elapsed_ms, f.attempts, f.request.url)
                    for f in not_modified
                ],
            )
            await conn.executemany(TOUCH_FRESH, [(crawl, url) for url in fresh])
            await insert_discovered(conn, crawl, (c for r in records for c in r.children))
            await conn.executemany(MARK_DONE, [(crawl, r.fetch.request.url) for r in records])
        self.written += len(records)

    async def links_from(self, url: str) -> list[str]:
        """The stored outgoing links of a page (to go on crawling from a page kept as it was)."""
        rows = await self._db.fetchall("SELECT links FROM pages WHERE url = ?", (url,))
        return json.loads(rows[0][0]) if rows and rows[0][0] else []


def _kept(record: PageRecord) -> bool:
    """The stored row stands: a 304, or a page fresher than crawl.recrawl_after."""
    return record.fetch.status == 304 or record.fetch.request.fresh


def _page_row(crawl_id: int, record: PageRecord) -> tuple[Any, ...]:
    fetch, parsed = record.fetch, record.parsed
    error_kind, error = fetch.error_kind, fetch.error
    if record.parse_error is not None:
        error_kind, error = "parse", record.parse_error
    return (
        fetch.request.url,
        crawl_id,
        fetch.request.depth,
        fetch.request.referrer,
        fetch.status,
        fetch.final_url,
        fetch.content_type,
        fetch.fetched_at,
        fetch.elapsed_ms,
        fetch.bytes,
        fetch.attempts,
        parsed.encoding if parsed else None,
        parsed.title if parsed else None,
        parsed.description if parsed else None,
        parsed.canonical if parsed else None,
        parsed.text_length if parsed else None,
        parsed.text_hash if parsed else None,
        parsed.text if parsed else None,
        parsed.fields_json if parsed else None,
        error_kind,
        error,
        fetch.etag,
        fetch.last_modified,
        parsed.links_json if parsed else None,
    )
