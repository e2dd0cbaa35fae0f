"""The sink: PageRecords → the backend's page writer, in batches, from one task.

Each batch is one transaction of the writer (store/base.py `PageWriter`): the pages (each with
its links), the URLs they discovered (into the frontier) and the batch's own URLs marked done, so
a crash at any instant loses nothing and repeats nothing.

A batch commits per `storage.batch_size` records, per `storage.flush_interval` seconds, or one
by one while a fetch worker idles for want of a request that may start and pages are not yet
committed (`commit_now.py`: their links may be its next work; the scheduler says when). A batch
interrupted by cancellation is finished before the task gives up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from scraper.config import StorageConfig
from scraper.crawl.commit_now import FLUSH, CommitNow
from scraper.models import PageRecord
from scraper.store.base import PageWriter


class Sink:
    """Batches records for the page writer; one task runs `consume`."""

    def __init__(
        self,
        writer: PageWriter,
        config: StorageConfig,
        on_stored: Callable[[list[PageRecord]], None] = lambda records: None,
        commit_now: CommitNow | None = None,
    ) -> None:
        self._writer = writer
        self._config = config
        self._on_stored = on_stored
        self._commit_now = commit_now or CommitNow()  # eager: commit each record as it comes
        self.writing = False

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
                    if item is FLUSH:
                        await self._flush(batch)
                    else:
                        if not batch:
                            deadline = loop.time() + self._config.flush_interval
                        batch.append(item)
                        if len(batch) >= self._config.batch_size:
                            await self._flush(batch)
                    if queue.empty():
                        if self._commit_now.eager:
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
        write = asyncio.ensure_future(self._writer.write(records))
        write.add_done_callback(self._done_writing)
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            await write  # finish the transaction already begun, then go on being cancelled
            raise
        self._on_stored(records)

    async def links_from(self, url: str) -> list[str]:
        """The stored outgoing links of a page (to go on crawling from a page kept as it was)."""
        return await self._writer.links_from(url)

    def _done_writing(self, _: object) -> None:
        self.writing = False
