"""Building one crawl's stages and wiring them: the dispatcher with its robots.txt gate, the
sink, the sitemap reader, the admission policy, and the pipeline that runs them, over a fetch
stage and a parse pool the caller has opened. Each object is built whole, in the order of what
it needs; none is attached to another afterwards (what two need of each other is built first
and given to both: the connection slots with the dispatcher's side of them, `wire_for`, and
the sink's commit-now signal). Wiring only: the stages' logic is in their modules, the crawl's
life (start, resume, stop, record) in `crawler.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from scraper.config import Config
from scraper.crawl.admit import Admission
from scraper.crawl.commit_now import CommitNow
from scraper.crawl.fetch import Fetcher
from scraper.crawl.hosts import Limits, politeness_keys
from scraper.crawl.keep_alive import KeepAlive
from scraper.crawl.on_the_wire import OnTheWire
from scraper.crawl.pipeline import Pipeline
from scraper.crawl.ports import Archiver, FetchStage
from scraper.crawl.robots import RobotsGate
from scraper.crawl.scheduler import Scheduler
from scraper.crawl.sink import Sink
from scraper.crawl.sitemaps import SitemapReader
from scraper.crawl.sockets import SocketBudget
from scraper.crawl.wire import WireSlots
from scraper.models import PageRecord, SpiderRef
from scraper.parse.pool import ParsePool
from scraper.parse.sitemap import parse_sitemap
from scraper.store.base import Frontier, HostLeases, PageWriter
from scraper.urls import in_scope


@dataclass(frozen=True, slots=True)
class Stages:
    """What the crawl's life needs of its stages: the dispatcher (stop, state for displays and
    the leases' close) and the pipeline (its run, counters, gauges)."""

    scheduler: Scheduler
    pipeline: Pipeline


def build_stages(
    config: Config,
    *,
    frontier: Frontier,
    leases: HostLeases,
    pages: PageWriter,
    fetcher: Fetcher,
    parser: ParsePool,
    wire: OnTheWire,
    spider: SpiderRef | None = None,
    on_stored: Callable[[list[PageRecord]], None] | None = None,
    archive: Archiver | None = None,
) -> Stages:
    """The stages of one crawl over an open `fetcher` and `parser`, and the `wire` the fetcher
    was made with (`wire_for`); `spider`: whose callbacks parse the pages; `on_stored`: told
    of each batch of pages once committed (after the dispatcher); `archive`: the open WARC
    archive (storage.warc), if any."""
    scope = config.crawl.scope()
    sink_queue: asyncio.Queue[object] = asyncio.Queue(2 * config.storage.batch_size)
    commit_now = CommitNow(sink_queue)  # the dispatcher's word to the sink

    def read_sitemaps(site: str, declared: tuple[str, ...]) -> None:
        if config.crawl.sitemaps:
            reading = sitemaps.read(site, declared)
            scheduler.start_crawl_task(reading, name=f"sitemaps {site}")

    make_gate = None
    if config.crawl.obey_robots or config.crawl.sitemaps:

        def make_gate(polite: FetchStage) -> RobotsGate:
            return RobotsGate(
                polite,  # robots.txt takes its turn on its host's slot
                config.fetch.user_agent,
                timeout=config.fetch.robots_timeout,
                obey=config.crawl.obey_robots,
                max_crawl_delay=config.fetch.max_crawl_delay,
                on_sitemaps=read_sitemaps,
                on_fetched=lambda site, record: scheduler.remember_robots(site, record),
                retry=config.fetch.retry_backoff_max,  # between rounds of asking
            )

    assert fetcher.resolver is not None  # (made when the fetcher opens)
    key_of, resolve_key = politeness_keys(config.fetch.politeness_key, fetcher.resolver)
    scheduler = Scheduler(
        frontier,
        wire.limits,
        fetch=fetcher,
        gate=make_gate,
        wire=wire,
        key_of=key_of,
        resolve_key=resolve_key,
        commit_now=commit_now,
        leases=leases,
        concurrency=config.fetch.concurrency,
    )

    def stored(records: list[PageRecord]) -> None:
        scheduler.stored(records)
        if on_stored is not None:
            on_stored(records)

    sink = Sink(pages, config.storage, on_stored=stored, commit_now=commit_now)

    async def emit(record: PageRecord) -> None:
        scheduler.expect_unrequested_record()
        await sink_queue.put(record)

    sitemaps = SitemapReader(
        scheduler.polite,  # sitemaps take their turn on their host's slot
        lambda job: parser.run(parse_sitemap, job),
        emit,
        scope=scope,
        policy=config.crawl.url_policy(),
        max_bytes=config.fetch.max_bytes,
    )
    admission = Admission(
        scope=scope,
        policy=config.crawl.url_policy(),
        max_depth=config.crawl.max_depth,
        max_redirects=config.fetch.max_redirects,
        links_from=sink.links_from,
        select=lambda urls, base: parser.run(in_scope, (scope, urls, base)),
    )
    pipeline = Pipeline(
        config, scheduler, fetcher, parser, sink, sink_queue, admission, spider, archive=archive
    )
    return Stages(scheduler, pipeline)


def wire_for(config: Config, budget: SocketBudget) -> OnTheWire:
    """The connection slots of one crawl, with the dispatcher's side of them: made before the
    fetcher (`Fetcher(..., wire=wire.slots, listener=wire)`) and the dispatcher, given to both.
    `budget`: the slots the open-files limit allows, and the idle connections that may stay open
    besides (`sockets.socket_budget`)."""
    return OnTheWire(
        limits(config), slots=WireSlots(budget.wire), keep_alive=KeepAlive(budget.idle)
    )


def limits(config: Config) -> Limits:
    """The dispatcher's per-slot limits, from the configuration."""
    return Limits(
        per_host_concurrency=config.fetch.per_host_concurrency,
        per_host_delay=config.fetch.per_host_delay,
        queue_size=config.crawl.queue_size,
        autothrottle=config.fetch.autothrottle,
        max_retry_after=config.fetch.max_retry_after,
    )
