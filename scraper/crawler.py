"""The coordinator: wires frontier → fetch → parse → sink and decides when the crawl is over.

It owns no stage's logic. Each stage runs as named tasks in nested TaskGroups, so no task outlives
the crawl, and the stages close in order: when the frontier reports the crawl over, the fetch
workers end, then the parse workers drain their bounded queue, then the sink drains its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from concurrent.futures.process import BrokenProcessPool

from .config import Config
from .errors import ConfigError, ScraperError
from .fetch import Fetcher
from .frontier import Frontier, MemoryFrontier
from .models import CrawlRequest, CrawlSnapshot, FetchResult, PageRecord, ParseJob
from .parse import ParsePool
from .sink import CrawlSummary, Sink, SqliteSink
from .urls import Scope, host_of

log = logging.getLogger(__name__)


class Crawler:
    """One crawl run: `await Crawler(config).run()`; `stop()` ends it early (e.g. on Ctrl-C)."""

    def __init__(self, config: Config) -> None:
        if not config.crawl.seeds:
            raise ConfigError(
                "no seeds: give start URLs on the command line or set crawl.seeds in config.toml"
            )
        self._config = config
        self._pipeline: asyncio.Task[None] | None = None
        self._stages: Pipeline | None = None
        self._stopping = False

    def snapshot(self) -> CrawlSnapshot:
        """The crawl's counters now (all zero before it starts), for a progress display."""
        if self._stages is None:
            return CrawlSnapshot(max_pages=self._config.crawl.max_pages)
        return self._stages.snapshot()

    def stop(self) -> None:
        """Stop taking work and end the crawl as interrupted; what was parsed is still stored."""
        self._stopping = True
        if self._pipeline is not None:
            self._pipeline.cancel()

    async def run(self) -> CrawlSummary:
        config = self._config
        async with SqliteSink(config.storage) as sink:
            await sink.start_crawl(config.crawl.seeds, config.to_json())
            try:
                status = await self._run_pipeline(sink)
            except BaseException as exc:
                status = "interrupted" if isinstance(exc, asyncio.CancelledError) else "failed"
                with contextlib.suppress(ScraperError):  # the first error is the one to report
                    await sink.finish_crawl(status)
                raise
            return await sink.finish_crawl(status)

    async def _run_pipeline(self, sink: SqliteSink) -> str:
        config = self._config
        async with Fetcher(config.fetch) as fetcher, ParsePool(config.parse) as parser:
            frontier = MemoryFrontier(config.crawl.max_pages)
            pipeline = self._stages = Pipeline(config, frontier, fetcher, parser, sink)
            self._pipeline = asyncio.create_task(pipeline.run(), name="pipeline")
            if self._stopping:
                self._pipeline.cancel()
            try:
                await self._pipeline
            except asyncio.CancelledError:
                if not self._stopping:
                    raise  # cancelled from outside: recorded by run(), then keep cancelling
                return "interrupted"
            except BaseExceptionGroup as group:
                raise _user_error_in(group) or group from None
            return "finished"


def _user_error_in(group: BaseExceptionGroup) -> ScraperError | None:
    """A stage's ScraperError (a full disk, say) reaches the TaskGroup wrapped; unwrap it."""
    matched, _ = group.split(ScraperError)
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


class Pipeline:
    """The stages' tasks and the bounded queues between them, for one crawl."""

    def __init__(
        self,
        config: Config,
        frontier: Frontier,
        fetcher: Fetcher,
        parser: ParsePool,
        sink: Sink,
    ) -> None:
        self._config = config
        self._frontier = frontier
        self._fetcher = fetcher
        self._parser = parser
        self._sink = sink
        self._scope = Scope(config.crawl.allowed_domains, config.crawl.max_depth)
        # Twice the slots: a worker waiting out a retry backoff holds no slot, so others fill it.
        self._fetch_tasks = 2 * config.fetch.concurrency
        # Two jobs per process: one parsing, one waiting, so no process idles between pages.
        self._parse_tasks = 2 * config.parse.workers
        self.parse_queue: asyncio.Queue[FetchResult | None] = asyncio.Queue(self._parse_tasks)
        self.sink_queue: asyncio.Queue[PageRecord | None] = asyncio.Queue(
            2 * config.storage.batch_size
        )
        self._pages = self._errors = self._bytes = 0

    def snapshot(self) -> CrawlSnapshot:
        return CrawlSnapshot(
            pages=self._pages,
            errors=self._errors,
            bytes=self._bytes,
            queued=self._frontier.queued(),
            in_flight=self._frontier.in_flight(),
            max_pages=self._config.crawl.max_pages,
        )

    async def run(self) -> None:
        seeds = [CrawlRequest(url=seed) for seed in self._config.crawl.seeds]
        await self._frontier.add(seeds)
        async with asyncio.TaskGroup() as crawl:
            crawl.create_task(self._sink.consume(self.sink_queue), name="sink")
            async with asyncio.TaskGroup() as parsers:
                for i in range(self._parse_tasks):
                    parsers.create_task(self._parse_worker(), name=f"parse-{i}")
                async with asyncio.TaskGroup() as fetchers:
                    for i in range(self._fetch_tasks):
                        fetchers.create_task(self._fetch_worker(), name=f"fetch-{i}")
                for _ in range(self._parse_tasks):
                    await self.parse_queue.put(None)
            await self.sink_queue.put(None)

    async def _fetch_worker(self) -> None:
        while (request := await self._frontier.next()) is not None:
            result = await self._fetcher.fetch(request)
            await self.parse_queue.put(result)

    async def _parse_worker(self) -> None:
        while (result := await self.parse_queue.get()) is not None:
            try:
                record = await self._parse(result)
                if record.parsed is not None:
                    await self._admit_links(result.request, record.parsed.links)
                await self.sink_queue.put(record)
                self._count(record)
            finally:
                await self._frontier.done(result.request)

    async def _parse(self, result: FetchResult) -> PageRecord:
        if not result.parsable or result.body is None:
            return PageRecord(fetch=result)
        job = ParseJob(
            url=result.final_url or result.request.url,
            body=result.body,
            content_type=result.content_type,
            rules=self._config.extract,
            store_text=self._config.parse.store_text,
        )
        stored = dataclasses.replace(result, body=None)  # the body goes no further than the parser
        try:
            parsed = await self._parser.parse(job)
        except BrokenProcessPool:
            raise
        except Exception as exc:  # the parser's bug must not lose the page: record it
            log.warning("parse failed for %s: %r", result.request.url, exc)
            return PageRecord(fetch=stored, parse_error=f"{type(exc).__name__}: {exc}")
        return PageRecord(fetch=stored, parsed=parsed)

    async def _admit_links(self, parent: CrawlRequest, links: tuple[str, ...]) -> None:
        depth = parent.depth + 1
        if self._config.crawl.max_depth and depth > self._config.crawl.max_depth:
            return
        await self._frontier.add(
            CrawlRequest(url=url, depth=depth, referrer=parent.url)
            for url in links
            if self._scope.allows_host(host_of(url))
        )

    def _count(self, record: PageRecord) -> None:
        self._pages += 1
        self._errors += record.fetch.error_kind is not None or record.parse_error is not None
        self._bytes += record.fetch.bytes or 0
