"""The pipeline: the stages' tasks and the bounded queues between them, for one crawl.

    scheduler ─handoff─▶ fetch workers ─parse queue─▶ parse workers ─sink queue─▶ sink
                         (2 × fetch.concurrency)      (2 per process)              (one task)

Each stage runs as named tasks in nested TaskGroups, so no task outlives the crawl, and the stages
close in order: when the scheduler declares the crawl over (or a stop was asked for), the fetch
workers end, then the parse workers drain their bounded queue, then the sink drains its own. The
queues bound pages by count; `BodyBudget` bounds the bodies waiting to be parsed by size.

With an archive (storage.warc), a batch's exchanges go to the archive's writer process while the
batch is parsed, and each record carries where its response (or, for a 304, revisit) record went
to the sink, which stores it with the page: a batch the archive could not write is not stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from scraper.config import Config
from scraper.crawl.admit import Admission
from scraper.crawl.fetch import Fetcher
from scraper.crawl.health import StageGauge
from scraper.crawl.ports import Archiver
from scraper.crawl.scheduler import Assignment, Scheduler
from scraper.crawl.sink import Sink
from scraper.models import (
    REDIRECTS,
    Archived,
    Exchange,
    FetchResult,
    PageRecord,
    ParseFailure,
    ParseJob,
    ParseResult,
    SpiderCall,
    SpiderRef,
)
from scraper.parse.pool import ParsePool
from scraper.parse.procpool import WorkerDied
from scraper.store.base import utc_now

log = logging.getLogger(__name__)

# A parse task sends up to this many pages (or bytes) to a worker process at once: one round trip
# through the pool's pipes and threads costs about as much CPU as parsing a 40 KB page.
PARSE_BATCH = 8
PARSE_BATCH_BYTES = 2_000_000
# Bodies fetched and not yet parsed, in bytes: past this, fetch workers start no new request.
PARSE_BACKLOG_BYTES = 24_000_000


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
        admission: Admission,
        spider: SpiderRef | None = None,
        archive: Archiver | None = None,
    ) -> None:
        self._config = config
        self._archive = archive
        self._scheduler = scheduler
        self._fetcher = fetcher
        self._parser = parser
        self._sink = sink
        self._admission = admission
        self._spider = spider  # whose callbacks parse the pages, with what they yield
        self._scope = config.crawl.scope()
        self._policy = config.crawl.url_policy()
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
        self._fetch_stage: list[asyncio.Task[None]] = []  # the scheduler and fetch workers
        self._aborted = False

    def abort_fetches(self) -> None:
        """End the fetch stage now: the dispatcher and the fetch workers are cancelled, so the
        requests in flight are abandoned (aiohttp closes their connections) and their URLs stay
        unstored; what was fetched before is still parsed and stored as the stages close."""
        self._aborted = True
        for task in self._fetch_stage:
            task.cancel()

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
        # The scheduler puts an assignment only for a worker that asked (want_work), then one
        # None per worker at the end: never more than twice the workers, so put_nowait is safe.
        handoff: asyncio.Queue[Assignment | None] = asyncio.Queue(2 * self._fetch_tasks)
        async with asyncio.TaskGroup() as crawl:
            crawl.create_task(self._sink.consume(self.sink_queue), name="sink")
            async with asyncio.TaskGroup() as parsers:
                for i in range(self._parse_tasks):
                    parsers.create_task(self._parse_worker(), name=f"parse-{i}")
                async with asyncio.TaskGroup() as fetchers:
                    self._fetch_stage = [
                        fetchers.create_task(
                            self._scheduler.run(handoff, self._fetch_tasks), name="scheduler"
                        ),
                        *(
                            fetchers.create_task(self._fetch_worker(handoff), name=f"fetch-{i}")
                            for i in range(self._fetch_tasks)
                        ),
                    ]
                    if self._aborted:  # (asked before the stage began)
                        self.abort_fetches()
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
        request, skip = assignment.request, assignment.skip_reason
        if self._spider is not None and (request.fresh or request.etag or request.last_modified):
            # A callback needs the body: a spider's crawl asks for every page whole.
            request = dataclasses.replace(request, fresh=False, etag=None, last_modified=None)
        if skip is not None:
            result = FetchResult(
                request=request,
                fetched_at=utc_now(),
                attempts=0,
                error_kind=assignment.skip_kind,
                error=skip,
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
        parsed = record.parsed
        self._errors += (
            record.fetch.error_kind is not None
            or record.parse_error is not None
            or (parsed is not None and parsed.callback_error is not None)
        )
        self._bytes += record.fetch.bytes or 0

    async def _process(self, batch: list[FetchResult]) -> list[PageRecord]:
        """Records for a batch, in its order, archived (storage.warc) while they are parsed."""
        if self._archive is None:
            return await self._records(batch)
        async with asyncio.TaskGroup() as both:
            archiving = both.create_task(self._archived(batch), name="archive batch")
            records = await self._records(batch)
        return [
            record if where is None else _archived_as(record, where)
            for record, where in zip(records, archiving.result(), strict=True)
        ]

    async def _archived(self, batch: list[FetchResult]) -> list[Archived | None]:
        """Each result's record in the archive (None: nothing went over the wire)."""
        assert self._archive is not None
        exchanges = [_exchange_of(result) for result in batch]
        places = iter(await self._archive.write([e for e in exchanges if e is not None]))
        return [None if exchange is None else next(places) for exchange in exchanges]

    async def _records(self, batch: list[FetchResult]) -> list[PageRecord]:
        """Records for a batch, in its order; its HTML pages parsed in one job for the pool."""
        records: list[PageRecord | None] = []
        to_parse: list[tuple[int, FetchResult]] = []
        for result in batch:
            record = await self._record_without_parsing(result)
            if record is None:
                to_parse.append((len(records), result))
            records.append(record)
        if to_parse:
            jobs = [self._job(result) for _, result in to_parse]
            self._in_pool += 1
            try:
                outcomes = await self._parse(jobs)
            finally:
                self._in_pool -= 1
            for (i, result), outcome in zip(to_parse, outcomes, strict=True):
                records[i] = self._parsed(result, outcome)
        assert all(record is not None for record in records)  # one per result, in order
        return [record for record in records if record is not None]

    async def _parse(self, jobs: list[ParseJob]) -> list[ParseResult | ParseFailure]:
        """The batch's outcomes. If its worker dies (a crash, or a page over parse.timeout), the
        batch's pages are parsed again one by one, so only the page that kills a worker is
        recorded as failed (with `error_kind = 'parse'`), and the crawl goes on."""
        try:
            return await self._parser.parse_many(jobs)
        except WorkerDied as exc:
            if len(jobs) == 1:
                return [ParseFailure(f"parsing {exc}" if exc.timed_out else str(exc))]
        outcomes = await asyncio.gather(*(self._parse([job]) for job in jobs))
        return [outcome for (outcome,) in outcomes]

    async def _record_without_parsing(self, result: FetchResult) -> PageRecord | None:
        """The record of a result that needs no parsing; None for an HTML page to parse."""
        if result.status == 304 or result.request.fresh:  # the stored page stands
            return await self._admission.kept_page(result)
        if result.status in REDIRECTS and result.final_url:
            return await self._admission.redirect(result, result.final_url)
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
            regex_timeout=self._config.parse.regex_timeout,
            spider=self._spider_call(result),
        )

    def _spider_call(self, result: FetchResult) -> SpiderCall | None:
        if self._spider is None:
            return None
        request = result.request
        return SpiderCall(
            spider=self._spider,
            callback=request.callback or "parse",
            meta=request.meta,
            status=result.status or 0,
            headers=result.headers,
            depth=request.depth,
            identity=request.identity,
        )

    def _parsed(self, result: FetchResult, outcome: ParseResult | ParseFailure) -> PageRecord:
        stored = dataclasses.replace(result, body=None)  # the body goes no further than the parser
        if isinstance(outcome, ParseFailure):  # the parser's bug must not lose the page: record it
            log.warning("parse failed for %s: %s", result.request.url, outcome.error)
            return PageRecord(fetch=stored, parse_error=outcome.error)
        if outcome.callback_error is not None:
            log.warning("%s: the spider's callback failed: %s", result.request.url,
                        outcome.callback_error)  # fmt: skip
            log.debug("%s", outcome.callback_trace)
        children = self._admission.links(result.request, outcome.follow)
        if outcome.requests:  # a spider's requests other than plain GETs
            children += self._admission.requested(result.request, outcome.requests)
        return PageRecord(fetch=stored, parsed=outcome, children=children)


def _exchange_of(result: FetchResult) -> Exchange | None:
    """What the archive keeps of a result: its exchange, as a revisit of the stored page's
    response for a 304 (the fetch stage asked conditionally only if there is one)."""
    exchange, request = result.exchange, result.request
    if exchange is None or result.status != 304 or request.archived_date is None:
        return exchange
    return dataclasses.replace(
        exchange, revisit_of=(request.archived_date, request.archived_digest or "")
    )


def _archived_as(record: PageRecord, where: Archived) -> PageRecord:
    """The record, with where it went in the archive (and no longer its exchange's bytes)."""
    fetch = dataclasses.replace(record.fetch, archived=where, exchange=None)
    return dataclasses.replace(record, fetch=fetch)
