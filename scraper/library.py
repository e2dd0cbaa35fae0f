"""The crawler as a library: `scraper.Crawl` (async, items as they are committed) and
`scraper.crawl` (sync, for scripts).

    async with scraper.Crawl(seeds=[...], spider=Shop, db="data/shop.db") as run:
        async for item in run.items():
            ...
    print(run.summary)

The caller's code cannot stall the crawl: items reach it from the database, where the sink
committed them, a page of at most `ITEMS_PAGE` read at a time in a thread of its own; the sink
only sets an event. A consumer that falls behind holds at most one page of items in memory
however far behind it is, and delays nothing else: the crawl goes on fetching and storing, and
`items()` goes on yielding after the crawl ends, until it has yielded every item of the crawl.

The CLI's process-wide settings are the CLI's: no signal handler is installed here (Ctrl-C is
the caller's; cancelling the `async with` body stops the crawl, recorded as interrupted and
resumable) and the garbage collector is left as the caller has it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from scraper.config import Config, load_config
from scraper.config.checks import Invalid
from scraper.crawl.crawler import Crawler
from scraper.errors import ConfigError
from scraper.models import PageRecord, SpiderRef
from scraper.spider.api import Spider
from scraper.spider.load import find_spider, ref_of, spider_settings
from scraper.store import open_results
from scraper.store.base import CrawlSummary

log = logging.getLogger(__name__)

ITEMS_PAGE = 500  # items read from the database at a time: the most `items()` holds in memory


class Crawl:
    """One crawl run from Python: `async with Crawl(...) as run`.

    `seeds`: start URLs (else the config's, or the spider's `start_urls`). `spider`: a
    `scraper.Spider` subclass (defined at the top level of a module or script: the parse worker
    processes import it; a script's crawl must run under `if __name__ == "__main__":`), or a
    spec as `--spider` takes it ("shop.py:Shop"). `db`: storage.db. `config`: a config.toml
    path or a `Config`. `settings`: config keys ("fetch.concurrency": 32), above the spider's
    settings and the config file. `fresh`: start anew even if the last crawl of these seeds did
    not finish (by default it is resumed, as `scraper crawl` does).

    Leaving the block normally waits for the crawl to end (`stop()` ends it sooner); an
    exception (or cancellation) in the block stops it, and it is recorded as interrupted."""

    def __init__(
        self,
        seeds: Iterable[str] = (),
        *,
        spider: type[Spider] | str | None = None,
        db: str | os.PathLike[str] | None = None,
        config: str | os.PathLike[str] | Config | None = None,
        settings: Mapping[str, Any] | None = None,
        fresh: bool = False,
    ) -> None:
        if isinstance(seeds, str):
            raise ConfigError("seeds: a list of URLs, not one string")
        self._seeds = list(seeds)
        self._spider = spider
        self._db = os.fspath(db) if db is not None else None
        self._config_given = config
        self._settings = dict(settings or {})
        self._fresh = fresh
        self._crawler: Crawler | None = None
        self._task: asyncio.Task[CrawlSummary] | None = None
        self._stored = asyncio.Event()  # set when a batch with items was committed
        self._summary: CrawlSummary | None = None
        self.config: Config | None = None  # the crawl's config, once it has begun

    @property
    def summary(self) -> CrawlSummary:
        """How the crawl ended (pages, errors, bytes, duration...), once the block is left."""
        if self._summary is None:
            raise RuntimeError("the crawl has not ended: read run.summary after the `async with`")
        return self._summary

    @property
    def crawl_id(self) -> int | None:
        """The crawl's id in the database, once it has begun."""
        return self._crawler.crawl_id if self._crawler is not None else None

    def stop(self) -> None:
        """End the crawl early, as Ctrl-C does the CLI's: what was fetched is stored, and the
        crawl is recorded as interrupted (a later run with the same seeds resumes it)."""
        if self._crawler is not None:
            self._crawler.stop()

    async def __aenter__(self) -> Self:
        # The spider's module is imported, and its file read, off the event loop.
        config, ref = await asyncio.to_thread(self._prepare)
        self.config = config
        self._crawler = Crawler(
            config, fresh=self._fresh, spider=ref, quiet=True, on_stored=self._on_stored
        )
        self._task = asyncio.create_task(self._crawler.run(), name="scraper crawl")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        if exc is not None:
            self.stop()
        try:
            self._summary = await asyncio.shield(self._task)
        except asyncio.CancelledError:
            self.stop()  # cancelled while waiting: the crawl stops and is recorded first
            await asyncio.wait([self._task])
            raise

    async def items(self) -> AsyncIterator[dict[str, Any]]:
        """The crawl's items, as dicts, in the order they were committed, each once; ends when
        the crawl has ended and every item has been yielded. Items a resumed crawl stored
        before this run are yielded first."""
        assert self._task is not None and self._crawler is not None, "use it inside `async with`"
        began = asyncio.ensure_future(self._crawler.began.wait())
        await asyncio.wait([began, self._task], return_when=asyncio.FIRST_COMPLETED)
        began.cancel()
        crawl_id = self._crawler.crawl_id
        if crawl_id is None or self.config is None:
            return  # it failed before it began: `async with` raises why
        reader = _ItemReader(self.config.storage.db, crawl_id)
        try:
            after = 0
            while True:
                finished = self._task.done()
                self._stored.clear()
                page = await reader.read(after)
                for item_id, data in page:
                    after = item_id
                    yield json.loads(data)
                if len(page) == ITEMS_PAGE:
                    continue
                if finished:
                    return
                stored = asyncio.ensure_future(self._stored.wait())
                await asyncio.wait([stored, self._task], return_when=asyncio.FIRST_COMPLETED)
                stored.cancel()
        finally:
            reader.close()

    def _on_stored(self, records: list[PageRecord]) -> None:
        if any(record.parsed is not None and record.parsed.items for record in records):
            self._stored.set()

    def _prepare(self) -> tuple[Config, SpiderRef | None]:
        """The config and the spider, as the CLI makes them: the spider's settings above the
        config file, `settings` and the arguments above both."""
        given, spider = self._config_given, self._spider
        ref: SpiderRef | None = None
        below: dict[str, Any] = {}
        if isinstance(spider, str):
            cls, ref = find_spider(spider)
            below = spider_settings(cls, spider)
        elif spider is not None:
            ref = ref_of(spider)
            below = spider_settings(spider, ref.spec)
        values = dict(self._settings)
        if self._seeds:
            values["crawl.seeds"] = self._seeds
        if self._db is not None:
            values["storage.db"] = self._db
        if isinstance(given, Config):
            return _with_values(given, {**below, **values}), ref
        path = Path(given) if given is not None else None
        return load_config(path, values=values, below=below), ref


class _ItemReader:
    """Reads a crawl's items from the database in a thread of its own (a SQLite connection
    stays on the thread that opened it), one page at a time."""

    def __init__(self, db: str, crawl_id: int) -> None:
        self._db = db
        self._crawl_id = crawl_id
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "scraper items")
        self._opened: Any = None
        self._reader: Any = None

    async def read(self, after: int) -> list[tuple[int, str]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._page, after)

    def _page(self, after: int) -> list[tuple[int, str]]:
        if self._reader is None:
            self._opened = open_results(self._db)
            self._reader = self._opened.__enter__()
        rows = self._reader.items(self._crawl_id, after=after, limit=ITEMS_PAGE).rows
        return [(int(row[0]), str(row[4])) for row in rows]

    def _close(self) -> None:
        if self._opened is not None:
            self._opened.__exit__(None, None, None)

    def close(self) -> None:
        self._thread.submit(self._close)
        self._thread.shutdown(wait=False)


def crawl(
    seeds: Iterable[str] = (),
    *,
    spider: type[Spider] | str | None = None,
    db: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | Config | None = None,
    settings: Mapping[str, Any] | None = None,
    fresh: bool = False,
) -> CrawlSummary:
    """Crawl to the end and return the summary: `Crawl`'s arguments, for a script (it runs its
    own event loop; the items are in the database: `scraper export --items`)."""

    async def run() -> CrawlSummary:
        the_crawl = Crawl(
            seeds, spider=spider, db=db, config=config, settings=settings, fresh=fresh
        )
        async with the_crawl:
            pass
        return the_crawl.summary

    return asyncio.run(run())


def _with_values(config: Config, values: Mapping[str, Any]) -> Config:
    """`config` with "section.key" values set, each checked as the loader checks it."""
    sections: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        current = getattr(config, section, None)
        fields = {f.name: f for f in dataclasses.fields(current)} if current is not None else {}
        if section == "extract" or key not in fields:
            problems.append(f"{dotted}: unknown config key")
            continue
        try:
            sections.setdefault(section, {})[key] = fields[key].metadata["check"](value)
        except Invalid as exc:
            problems.append(f"{dotted} = {value!r}: {exc}")
    if problems:
        raise ConfigError(*problems)
    changed = {
        name: dataclasses.replace(getattr(config, name), **keys) for name, keys in sections.items()
    }
    return dataclasses.replace(config, **changed)
