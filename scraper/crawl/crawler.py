"""The coordinator: wires scheduler → fetch → parse → sink, resumes and stops crawls.

It owns no stage's logic. Each stage runs as named tasks in nested TaskGroups, so no task outlives
the crawl, and the stages close in order: when the scheduler declares the crawl over (or a stop
was asked for), the fetch workers end, then the parse workers drain their bounded queue, then the
sink drains its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from scraper.config import Config
from scraper.crawl.fetch import Fetcher
from scraper.crawl.health import LoopLagMonitor, StageGauge, StageSampler
from scraper.crawl.robots import RobotsGate
from scraper.crawl.scheduler import Assignment, Limits, Scheduler
from scraper.crawl.sink import Sink
from scraper.crawl.sitemaps import SitemapReader, parse_sitemap
from scraper.errors import ConfigError, ScraperError
from scraper.models import (
    CrawlRequest,
    CrawlSnapshot,
    FetchResult,
    PageRecord,
    ParseFailure,
    ParseJob,
    ParseResult,
)
from scraper.parse.pool import ParsePool
from scraper.parse.procpool import WorkerDied
from scraper.store import open_backend
from scraper.store.base import Backend, CrawlSummary, Frontier, FrontierState, utc_now
from scraper.store.sqlite.frontier import SeenCache
from scraper.urls import canonicalize

log = logging.getLogger(__name__)

REDIRECTS = frozenset({301, 302, 303, 307, 308})
TOP_HOSTS = 10
SEEN_CACHE_SIZE = 100_000
# A parse task sends up to this many pages (or bytes) to a worker process at once: one round trip
# through the pool's pipes and threads costs about as much CPU as parsing a 40 KB page.
PARSE_BATCH = 8
PARSE_BATCH_BYTES = 2_000_000
# Bodies fetched and not yet parsed, in bytes: past this, fetch workers start no new request.
PARSE_BACKLOG_BYTES = 24_000_000


class Crawler:
    """One crawl run: `await Crawler(config).run()`; `stop()` ends it early (e.g. on Ctrl-C)."""

    def __init__(
        self,
        config: Config,
        *,
        fresh: bool = False,
        announce: Callable[[str], None] = log.info,
    ) -> None:
        if not config.crawl.seeds:
            raise ConfigError(
                "no seeds: give start URLs on the command line or set crawl.seeds in config.toml"
            )
        self._config = config
        self._fresh = fresh
        self._announce = announce
        self._pipeline: asyncio.Task[None] | None = None
        self._scheduler: Scheduler | None = None
        self._sitemaps: SitemapReader | None = None
        self._lag = LoopLagMonitor(on_stall=self._on_stall, on_tick=self._sample_stages)
        self._stage_times = StageSampler()
        self._stages: Pipeline | None = None
        self._stored_before = 0  # pages a resumed crawl had already stored
        self._stopping = False

    def snapshot(self) -> CrawlSnapshot:
        """The crawl's counters now (all zero before it starts), for a progress display."""
        if self._stages is None or self._scheduler is None:
            return CrawlSnapshot(max_pages=self._config.crawl.max_pages)
        pages, errors, size = self._stages.counts()
        lag = self._lag.stats()
        return CrawlSnapshot(
            pages=self._stored_before + pages,
            errors=errors,
            bytes=size,
            queued=self._scheduler.queued(),
            in_flight=self._stages.on_the_wire(),
            max_pages=self._config.crawl.max_pages,
            loop_lag_p50_ms=lag.p50,
            loop_lag_p99_ms=lag.p99,
            loop_lag_max_ms=lag.max,
        )

    def stop(self) -> None:
        """Take no new work; give requests in flight crawl.shutdown_grace seconds, then cancel.
        Everything parsed by then is stored, and the crawl is marked interrupted."""
        if self._stopping:
            return
        self._stopping = True
        self._begin_stop()

    def _begin_stop(self) -> None:
        if self._scheduler is None or self._pipeline is None:
            return  # the pipeline starts already stopping
        self._scheduler.stop()
        pipeline = self._pipeline
        asyncio.get_running_loop().call_later(self._config.crawl.shutdown_grace, pipeline.cancel)

    async def run(self) -> CrawlSummary:
        config = self._config
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with open_backend(config.storage) as backend:
            crawls = backend.crawls
            crawl_id = await self._crawl_to_resume(backend)
            resumed = crawl_id is not None
            if crawl_id is None:
                crawl_id = await crawls.start(config.crawl.seeds, config.to_json())
            else:
                await crawls.reopen(crawl_id)
            frontier = backend.frontier(crawl_id, config.crawl.recrawl_after)
            again = await frontier.reset_leases()
            await frontier.seed([CrawlRequest(url=seed) for seed in config.crawl.seeds])
            done = await frontier.count(FrontierState.DONE)
            if resumed:
                self._announce(
                    f"resuming crawl {crawl_id}: {done} pages already stored, "
                    f"{again} in flight when it stopped will be fetched again (--fresh starts anew)"
                )
            try:
                status = await self._run_pipeline(backend, crawl_id, frontier, done)
            except BaseException as exc:
                status = "interrupted" if isinstance(exc, asyncio.CancelledError) else "failed"
                with contextlib.suppress(ScraperError):  # the first error is the one to report
                    await crawls.finish(
                        crawl_id, status, loop.time() - started, extra=self._health()
                    )
                raise
            return await crawls.finish(
                crawl_id, status, loop.time() - started, resumed=resumed, extra=self._health()
            )

    async def _crawl_to_resume(self, backend: Backend) -> int | None:
        if self._fresh:
            return None
        mine, other = await backend.crawls.unfinished(self._config.crawl.seeds)
        if not mine and other:
            self._announce(
                f"crawl {other} did not finish but had other seeds; starting a new crawl "
                "(run again with its seeds to resume it)"
            )
        return mine or None

    def _health(self) -> dict[str, Any]:
        """What the crawl's row keeps of how it ran: loop lag, and each host's last settings."""
        hosts = self._scheduler.hosts() if self._scheduler is not None else {}
        busiest = sorted(hosts.items(), key=lambda item: -item[1]["in_flight"])[:TOP_HOSTS]
        return {
            "loop_lag_ms": self._lag.stats().as_json(),
            "stages": self._stage_times.as_json(),
            "hosts": dict(busiest),
        }

    def _sample_stages(self) -> None:
        if self._stages is not None:
            self._stage_times.add(self._stages.gauges(), asyncio.get_running_loop().time())

    def _on_stall(self, lag_ms: float) -> None:
        stages = self._stages.depths() if self._stages is not None else {}
        busiest = max(stages, key=lambda name: stages[name], default="unknown")
        log.warning(
            "the event loop stalled %.0f ms (queues: %s; fullest: %s)",
            lag_ms,
            ", ".join(f"{k} {v}" for k, v in stages.items()),
            busiest,
        )

    def _read_sitemaps(self, site: str, declared: tuple[str, ...]) -> None:
        if self._config.crawl.sitemaps and self._sitemaps is not None and self._scheduler:
            self._scheduler.track(self._sitemaps.read(site, declared))

    async def _run_pipeline(
        self, backend: Backend, crawl_id: int, frontier: Frontier, done: int
    ) -> str:
        config = self._config
        async with Fetcher(config.fetch) as fetcher, ParsePool(config.parse) as parser:
            sink_queue: asyncio.Queue[object] = asyncio.Queue(2 * config.storage.batch_size)
            gate = None
            if config.crawl.obey_robots or config.crawl.sitemaps:
                gate = RobotsGate(
                    fetcher,
                    config.fetch.user_agent,
                    timeout=config.fetch.robots_timeout,
                    obey=config.crawl.obey_robots,
                    on_sitemaps=lambda site, urls: self._read_sitemaps(site, urls),
                )
            scheduler = Scheduler(
                frontier,
                _limits(config),
                gate=gate,
                on_starved=lambda starved: sink.set_eager(starved, sink_queue),
                handed=done,
            )
            sink = Sink(backend.pages(crawl_id), config.storage, on_stored=scheduler.stored)

            async def emit(record: PageRecord) -> None:
                scheduler.adopt()
                await sink_queue.put(record)

            self._sitemaps = SitemapReader(
                fetcher,
                lambda job: parser.run(parse_sitemap, job),
                emit,
                scope=config.crawl.scope(),
                policy=config.crawl.url_policy(),
                max_bytes=config.fetch.max_bytes,
            )
            pipeline = Pipeline(config, scheduler, fetcher, parser, sink, sink_queue)
            self._scheduler, self._stages, self._stored_before = scheduler, pipeline, done
            self._pipeline = asyncio.create_task(pipeline.run(), name="pipeline")
            if self._stopping:
                self._begin_stop()
            watch = asyncio.create_task(self._lag.run(), name="loop-lag")
            try:
                await self._pipeline
            except asyncio.CancelledError:
                if not self._stopping:
                    raise  # cancelled from outside: recorded by run(), then keep cancelling
                return "interrupted"
            except BaseExceptionGroup as group:
                raise _user_error_in(group) or group from None
            finally:
                watch.cancel()
            return "interrupted" if self._stopping else "finished"


def _limits(config: Config) -> Limits:
    return Limits(
        per_host_concurrency=config.fetch.per_host_concurrency,
        per_host_delay=config.fetch.per_host_delay,
        queue_size=config.crawl.queue_size,
        max_pages=config.crawl.max_pages,
        max_pages_per_host=config.crawl.max_pages_per_host,
        autothrottle=config.fetch.autothrottle,
        robots_retry=config.fetch.retry_backoff_max,
    )


def _user_error_in(group: BaseExceptionGroup) -> ScraperError | None:
    """A stage's ScraperError (a full disk, say) reaches the TaskGroup wrapped; unwrap it."""
    matched, _ = group.split(ScraperError)
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched


class BodyBudget:
    """Bytes of bodies fetched and not yet parsed, plus room reserved for each request on its way
    (the mean body so far): `reserve` waits while the total is at `limit`. The parse queue bounds
    pages by count; this bounds them by size, when pages are megabytes."""

    def __init__(self, limit: int, first_guess: float = 1_000_000.0) -> None:
        self.limit = limit
        self.held = 0
        # A high first guess, so the first requests cannot fetch more than the limit at once
        # while nothing is known of the site; the mean of real bodies soon replaces it.
        self.mean_body = first_guess
        self._room = asyncio.Event()  # set when the total may have gone under the limit

    async def reserve(self) -> int:
        """Wait for room, then hold the mean body's size for a request; returns what it held."""
        while self.held >= self.limit:
            self._room.clear()
            await self._room.wait()
        estimate = round(self.mean_body)
        self.held += estimate
        return estimate

    def settle(self, estimate: int, size: int, *, measured: bool) -> None:
        """A request reserved `estimate` and brought a body of `size` (0 for none), held until it
        is parsed; `measured`: it came from the network, so its size counts in the mean."""
        if measured:
            self.mean_body += (size - self.mean_body) / 8  # a moving mean
        self.release(estimate - size)

    def release(self, size: int) -> None:
        """`size` bytes are free again (parsed, or reserved and not used)."""
        self.held -= size
        if self.held < self.limit:
            self._room.set()


class Pipeline:
    """The stages' tasks and the bounded queues between them, for one crawl."""

    def __init__(
        self,
        config: Config,
        scheduler: Scheduler,
        fetcher: Fetcher,
        parser: ParsePool,
        sink: Sink,
        sink_queue: asyncio.Queue[object],
    ) -> None:
        self._config = config
        self._scheduler = scheduler
        self._fetcher = fetcher
        self._parser = parser
        self._sink = sink
        self._scope = config.crawl.scope()
        self._policy = config.crawl.url_policy()
        self._seen = SeenCache(SEEN_CACHE_SIZE)
        # Twice the slots: a worker waiting out a retry backoff holds no slot, so others fill it.
        self._fetch_tasks = 2 * config.fetch.concurrency
        # Two batches per process: one parsing, one waiting, so no process idles between batches.
        self._parse_tasks = max(1, 2 * config.parse.workers)
        self.parse_queue: asyncio.Queue[FetchResult | None] = asyncio.Queue(
            self._parse_tasks * PARSE_BATCH
        )
        self.sink_queue = sink_queue
        self._pages = self._errors = self._bytes = 0
        self._in_pool = 0  # parse batches sent to the worker processes and not yet back
        self._backlog = BodyBudget(PARSE_BACKLOG_BYTES)

    def on_the_wire(self) -> int:
        return self._fetcher.in_flight

    def depths(self) -> dict[str, int]:
        """How full each stage's queue is: where the work is piling up."""
        return {
            "fetch": self._scheduler.queued(),
            "parse": self.parse_queue.qsize(),
            "sink": self.sink_queue.qsize(),
        }

    def gauges(self) -> dict[str, StageGauge]:
        """Each stage's load now (0 to 1) and its queue: what the crawl's `stages` counters
        sample. Fetch: requests on the wire out of fetch.concurrency; parse: worker processes
        with a batch; sink: a transaction under way or not."""
        workers = max(1, self._config.parse.workers)
        return {
            "fetch": StageGauge(
                self._fetcher.in_flight / self._config.fetch.concurrency, self._scheduler.queued()
            ),
            "parse": StageGauge(min(self._in_pool, workers) / workers, self.parse_queue.qsize()),
            "sink": StageGauge(1.0 if self._sink.writing else 0.0, self.sink_queue.qsize()),
        }

    def counts(self) -> tuple[int, int, int]:
        """Pages handed to the sink in this run, how many of them with an error, their bytes."""
        return self._pages, self._errors, self._bytes

    async def run(self) -> None:
        handoff: asyncio.Queue[Assignment | None] = asyncio.Queue()  # ≤ one item per idle worker
        async with asyncio.TaskGroup() as crawl:
            crawl.create_task(self._sink.consume(self.sink_queue), name="sink")
            async with asyncio.TaskGroup() as parsers:
                for i in range(self._parse_tasks):
                    parsers.create_task(self._parse_worker(), name=f"parse-{i}")
                async with asyncio.TaskGroup() as fetchers:
                    fetchers.create_task(
                        self._scheduler.run(handoff, self._fetch_tasks), name="scheduler"
                    )
                    for i in range(self._fetch_tasks):
                        fetchers.create_task(self._fetch_worker(handoff), name=f"fetch-{i}")
                for _ in range(self._parse_tasks):
                    await self.parse_queue.put(None)
            await self.sink_queue.put(None)

    async def _fetch_worker(self, handoff: asyncio.Queue[Assignment | None]) -> None:
        while await self._fetch_next(handoff):
            pass  # one step per call: its locals (a body of megabytes) die with it

    async def _fetch_next(self, handoff: asyncio.Queue[Assignment | None]) -> bool:
        # Room for the body before asking for work: a worker waiting for an assignment is as good
        # as one fetching.
        estimate = await self._backlog.reserve()
        self._scheduler.want_work()
        assignment = await handoff.get()
        if assignment is None:
            self._backlog.release(estimate)
            return False
        request, skip = assignment
        if skip is not None:
            result = FetchResult(
                request=request, fetched_at=utc_now(), attempts=0, error_kind="robots", error=skip
            )
        elif request.fresh:
            result = FetchResult(request=request, fetched_at=utc_now(), attempts=0)
        else:
            result = await self._fetcher.fetch(request)
            self._scheduler.fetched(request, result)
        fetched = skip is None and not request.fresh  # a response (or a failure) of the network
        self._backlog.settle(estimate, len(result.body or b""), measured=fetched)
        await self.parse_queue.put(result)
        return True

    async def _parse_worker(self) -> None:
        while await self._parse_next():
            pass  # one batch per call: its bodies are freed when it returns

    async def _parse_next(self) -> bool:
        batch, ended = await self._take_batch()
        records = await self._process(batch)
        self._backlog.release(sum(len(result.body or b"") for result in batch))
        del batch  # before waiting on the sink
        for record in records:
            await self.sink_queue.put(record)
            self._count(record)
        return not ended

    async def _take_batch(self) -> tuple[list[FetchResult], bool]:
        """The next result, and those queued behind it, up to a batch; and whether the stage
        ended (its None came)."""
        result = await self.parse_queue.get()
        if result is None:
            return [], True
        batch, size = [result], len(result.body or b"")
        queue = self.parse_queue
        while len(batch) < PARSE_BATCH and size < PARSE_BATCH_BYTES and not queue.empty():
            result = queue.get_nowait()
            if result is None:
                return batch, True
            batch.append(result)
            size += len(result.body or b"")
        return batch, False

    def _count(self, record: PageRecord) -> None:
        self._pages += 1
        self._errors += record.fetch.error_kind is not None or record.parse_error is not None
        self._bytes += record.fetch.bytes or 0

    async def _process(self, batch: list[FetchResult]) -> list[PageRecord]:
        """Records for a batch, in its order; its HTML pages parsed in one job for the pool."""
        records: list[PageRecord | None] = []
        to_parse: list[tuple[int, FetchResult]] = []
        for result in batch:
            record = await self._unparsed(result)
            if record is None:
                to_parse.append((len(records), result))
            records.append(record)
        if to_parse:
            jobs = [self._job(result) for _, result in to_parse]
            self._in_pool += 1
            try:
                outcomes = await self._parser.parse_many(jobs)
            except WorkerDied as exc:  # a crash in the parser's process: record, and go on
                failure = ParseFailure(f"{exc}, while parsing a batch of {len(jobs)} pages")
                outcomes = [failure] * len(jobs)
            finally:
                self._in_pool -= 1
            for (i, result), outcome in zip(to_parse, outcomes, strict=True):
                records[i] = self._parsed(result, outcome)
        return [record for record in records if record is not None]

    async def _unparsed(self, result: FetchResult) -> PageRecord | None:
        """The record of a result that needs no parsing; None for an HTML page to parse."""
        request = result.request
        if result.status == 304 or request.fresh:  # the stored page stands; so do its links
            links = await self._sink.links_from(request.url)
            follow = [url for url in links if self._scope.allows(url)]
            return PageRecord(fetch=result, children=self._admit(request, follow))
        if result.status in REDIRECTS and result.final_url:
            return self._redirect(result, result.final_url)
        if not result.parsable or result.body is None:
            return PageRecord(fetch=result)
        return None

    def _job(self, result: FetchResult) -> ParseJob:
        assert result.body is not None
        return ParseJob(
            url=result.final_url or result.request.url,
            body=result.body,
            content_type=result.content_type,
            rules=self._config.extract,
            text=self._config.parse.text,
            policy=self._policy,
            scope=self._scope,  # so the parser's process filters the links, not the loop
        )

    def _parsed(self, result: FetchResult, outcome: ParseResult | ParseFailure) -> PageRecord:
        stored = dataclasses.replace(result, body=None)  # the body goes no further than the parser
        if isinstance(outcome, ParseFailure):  # the parser's bug must not lose the page: record it
            log.warning("parse failed for %s: %s", result.request.url, outcome.error)
            return PageRecord(fetch=stored, parse_error=outcome.error)
        return PageRecord(
            fetch=stored, parsed=outcome, children=self._admit(result.request, outcome.follow)
        )

    def _redirect(self, result: FetchResult, target: str) -> PageRecord:
        """A redirect is stored as it is; its target becomes a URL of the frontier like a link
        (so two URLs redirecting to one page store it once), if in scope and not too far."""
        request = result.request
        target = canonicalize(target, policy=self._policy) or target
        hops = request.hops + 1
        if self._config.fetch.max_redirects == 0:
            return PageRecord(fetch=result)  # redirects are stored, never followed
        if target == request.url or hops > self._config.fetch.max_redirects:
            why = "redirects to itself" if target == request.url else "too many redirects"
            limit = self._config.fetch.max_redirects
            return PageRecord(
                fetch=dataclasses.replace(
                    result, error_kind="redirects", error=f"{why} (fetch.max_redirects = {limit})"
                )
            )
        if not self._scope.allows(target):
            return PageRecord(fetch=result)  # out of scope: recorded, not followed
        child = CrawlRequest(url=target, depth=request.depth, referrer=request.url, hops=hops)
        return PageRecord(fetch=result, children=(child,))

    def _admit(
        self, parent: CrawlRequest, follow: tuple[str, ...] | list[str]
    ) -> tuple[CrawlRequest, ...]:
        """The in-scope links worth a frontier row: within depth, not seen very recently."""
        depth = parent.depth + 1
        if self._config.crawl.max_depth and depth > self._config.crawl.max_depth:
            return ()
        referrer = parent.url
        return tuple(
            CrawlRequest(url=url, depth=depth, referrer=referrer)
            for url in self._seen.admit(follow)
        )
