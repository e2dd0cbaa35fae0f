"""A crawl's life: opens its storage, starts or resumes the crawl (or joins one), runs its stages,
stops it (Ctrl-C: a grace, then cancel; in a fleet, at once) and records how it ended.

Building the stages and wiring them is `stages.py`'s; the stages' tasks and the queues between
them are the Pipeline's (`pipeline.py`), so no stage imports another.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

from aiohttp.abc import AbstractResolver

from scraper.archive.archive import Archive
from scraper.config import Config
from scraper.crawl.addresses import AddressGuard
from scraper.crawl.cookies import CookieJars, CookieLeases
from scraper.crawl.credentials import NONE as NO_CREDENTIALS
from scraper.crawl.credentials import Credentials, read_credentials
from scraper.crawl.dns import make_resolver
from scraper.crawl.fetch import Fetcher
from scraper.crawl.gauges import CrawlGauges
from scraper.crawl.health import LoopLagMonitor, StageSampler
from scraper.crawl.identity import Identities
from scraper.crawl.leases import request_margin
from scraper.crawl.on_the_wire import OnTheWire
from scraper.crawl.pipeline import Pipeline
from scraper.crawl.proxies import ProxyPool, proxy_pool, target_vetter
from scraper.crawl.response import HTML_TYPES, SPIDER_TYPES
from scraper.crawl.scheduler import Scheduler
from scraper.crawl.seeds import SeedFile, digest_of
from scraper.crawl.sessions import Sessions
from scraper.crawl.sockets import raise_open_files_limit, socket_budget
from scraper.crawl.stages import build_stages, wire_for
from scraper.errors import ConfigError, ScraperError
from scraper.models import CrawlRequest, CrawlSnapshot, PageRecord, SeedList, SpiderRef
from scraper.parse.pool import ParsePool
from scraper.spider.load import find_spider
from scraper.store import open_backend
from scraper.store.base import (
    Backend,
    CrawlSummary,
    FleetLoad,
    FleetRules,
    Frontier,
    FrontierState,
    HostLeases,
    HostPoliteness,
)
from scraper.urls import host_of

log = logging.getLogger(__name__)

TOP_HOSTS = 10


class Crawler:
    """One crawl run: `await Crawler(config).run()`; `stop()` ends it early (e.g. on Ctrl-C)."""

    def __init__(
        self,
        config: Config,
        *,
        fresh: bool = False,
        announce: Callable[[str], None] = log.info,
        resolver: AbstractResolver | None = None,
        join: int | None = None,
        quiet: bool = False,
        spider: SpiderRef | None = None,
        on_stored: Callable[[list[PageRecord]], None] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        """`resolver`: how host names are resolved, instead of fetch.resolve and the system's
        (tests, and a layer such as a filter of private addresses). `join`: work on that
        running crawl beside the processes already on it (a worker; PostgreSQL). `quiet`: the
        summary only (stalls of the event loop are logged at INFO, and counted). `spider`: the
        crawl's spider, found (`spider/load.py`); None: crawl.spider's, found as the crawl
        starts (off the loop), or none. `on_stored`: told of each batch of pages committed (on
        the loop: it must not block). `credentials`: the secrets the config names, read at the
        edge (None: `run` reads them, in a thread)."""
        if not config.crawl.seeds and not config.crawl.seeds_file and join is None:
            raise ConfigError(
                "no seeds: give start URLs on the command line (or --seeds-file), or set "
                "crawl.seeds in config.toml"
            )
        if (spider is not None or config.crawl.spider) and config.parse.workers == 0:
            raise ConfigError(
                "parse.workers = 0 parses on the event loop, where a spider's callbacks may not "
                "run (they could stall every download): give it 1 or more"
            )
        self._config = config
        self._fresh = fresh
        self._announce = announce
        self._pipeline_task: asyncio.Task[None] | None = None
        self._scheduler: Scheduler | None = None
        self._lag = LoopLagMonitor(on_stall=self._on_stall, on_tick=self._sample_stages)
        self._stalls = 0
        self._quiet = quiet
        self._stage_times = StageSampler()
        self._pipeline: Pipeline | None = None
        self._gauges: CrawlGauges | None = None  # the other processes' gauges, for the display
        self._stored_before = 0  # pages a resumed crawl had already stored
        self._stopping = False
        self._resolver = resolver
        self._open_files = 0
        self._join = join
        self._spider = spider
        self._on_stored = on_stored
        self._credentials = credentials
        self._proxies: ProxyPool | None = None
        self._sessions: Sessions | None = None
        self._shared = False  # host leases shared with other processes (PostgreSQL)
        self.crawl_id: int | None = None
        self.began = asyncio.Event()  # set once crawl_id is known (its row exists, it runs)
        self.stopped = asyncio.Event()  # set by stop()

    def snapshot(self) -> CrawlSnapshot:
        """The crawl's counters now (all zero before it starts), for a progress display."""
        if self._pipeline is None or self._scheduler is None:
            return CrawlSnapshot(max_pages=self._config.crawl.max_pages)
        pages, errors, size = self._pipeline.counts()
        lag = self._lag.stats()
        queued, in_flight = self._own_gauges()
        fleet = self._gauges.load if self._gauges is not None else FleetLoad()
        return CrawlSnapshot(
            # In a fleet, every other process's pages (of every run: what a resumed crawl had)
            # and this one's; alone, what the crawl had when this process began, and its own.
            pages=(self._stored_before if fleet.stored is None else fleet.stored) + pages,
            errors=errors,
            bytes=size,
            queued=(fleet.pending or 0) + fleet.queued + queued,
            in_flight=fleet.in_flight + in_flight,
            queued_capped=fleet.pending_capped,
            processes=1 + fleet.others,
            here_queued=queued,
            here_in_flight=in_flight,
            max_pages=self._config.crawl.max_pages,
            loop_lag_p50_ms=lag.p50,
            loop_lag_p99_ms=lag.p99,
            loop_lag_max_ms=lag.max,
        )

    def _own_gauges(self) -> tuple[int, int]:
        """This process's URLs admitted and not fetched, and its requests on the wire."""
        if self._pipeline is None or self._scheduler is None:
            return 0, 0
        return self._scheduler.queued(), self._pipeline.on_the_wire()

    def stop(self) -> None:
        """Take no new work; give requests in flight crawl.shutdown_grace seconds, then cancel.
        Everything parsed by then is stored, and the crawl is marked interrupted. With shared
        host leases (several processes on the crawl) the requests in flight are cancelled at
        once instead: what was fetched is still parsed and stored, and the hosts go back to
        the others with their politeness state, their unstored URLs to pending."""
        if self._stopping:
            return
        self._stopping = True
        self.stopped.set()
        self._begin_stop()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _begin_stop(self) -> None:
        if self._scheduler is None or self._pipeline_task is None:
            return  # the pipeline starts already stopping
        self._scheduler.stop()
        if self._shared and self._pipeline is not None:
            # Others wait for this process's hosts: cancel its requests (their connections
            # close) rather than let them run out the grace, then hand the hosts on.
            self._pipeline.abort_fetches()
        task = self._pipeline_task
        asyncio.get_running_loop().call_later(self._config.crawl.shutdown_grace, task.cancel)

    async def run(self) -> CrawlSummary:
        config = self._config
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._open_files = raise_open_files_limit()
        if self._credentials is None:  # (environment variables and files: not on the loop)
            self._credentials = await asyncio.to_thread(read_credentials, config)
        seed_file = None
        if config.crawl.seeds_file:
            seed_file = SeedFile(config.crawl.seeds_file, config.crawl.url_policy())
        try:
            seeds = await seed_file.scan() if seed_file else digest_of(config.crawl.seeds)
            if seed_file is not None:
                self._announce_seeds(seeds)
            if self._spider is None and config.crawl.spider:
                _, self._spider = await asyncio.to_thread(find_spider, config.crawl.spider)
            async with open_backend(config.storage) as backend:
                return await self._run(backend, seeds, seed_file, started)
        finally:
            if seed_file is not None:
                await seed_file.close()

    def _announce_seeds(self, seeds: SeedList) -> None:
        if not seeds.count:
            raise ConfigError(
                f"crawl.seeds_file = {self._config.crawl.seeds_file!r}: no http(s) URL in it"
                + (f" ({seeds.bad_lines[0]})" if seeds.bad_lines else "")
            )
        message = f"{seeds.count} seeds from {self._config.crawl.seeds_file}"
        if seeds.bad:
            more = f"; and {seeds.bad - len(seeds.bad_lines)} more" if seeds.bad > 5 else ""
            message += f"; {seeds.bad} lines skipped: " + "; ".join(seeds.bad_lines) + more
        self._announce(message)

    async def _run(
        self, backend: Backend, seeds: SeedList, seed_file: SeedFile | None, started: float
    ) -> CrawlSummary:
        config = self._config
        loop = asyncio.get_running_loop()
        crawls = backend.crawls
        if self._join is not None:
            crawl_id, resumed, again = self._join, False, 0
            await backend.join(crawl_id, self._rules())
            frontier = backend.frontier(crawl_id, config.crawl.recrawl_after, self._rules())
        else:
            to_resume = await self._crawl_to_resume(backend, seeds)
            resumed = to_resume is not None
            if to_resume is None:
                crawl_id = await crawls.start(seeds, _stored_config(config, backend))
            else:
                crawl_id = to_resume
                await crawls.reopen(crawl_id)
            frontier = backend.frontier(crawl_id, config.crawl.recrawl_after, self._rules())
            again = await frontier.reset_leases()
            await frontier.seed([CrawlRequest(url=seed) for seed in config.crawl.seeds])
            if seed_file is not None:
                async for batch in seed_file.batches():
                    await frontier.seed(batch)
        self.crawl_id = crawl_id
        self.began.set()
        leases: HostLeases = _leases(backend, crawl_id, config, self._rules())
        jars = CookieJars(store=leases.remember_cookies) if config.fetch.cookies else None
        if jars is not None:  # each host's jar goes with its lease
            leases = CookieLeases(leases, jars)
        self._shared = leases.shared
        done = await frontier.count(FrontierState.DONE)
        if resumed:
            self._announce(
                f"resuming crawl {crawl_id}: {done} pages already stored, "
                f"{again} in flight when it stopped will be fetched again (--fresh starts anew)"
            )
        try:
            status = await self._run_pipeline(backend, crawl_id, frontier, done, leases, jars)
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, asyncio.CancelledError) else "failed"
            with contextlib.suppress(ScraperError):  # the first error is the one to report
                await leases.close(status, self._politeness())
                await crawls.finish(crawl_id, status, loop.time() - started, extra=self._health())
            raise
        await leases.close(status, self._politeness())
        return await crawls.finish(
            crawl_id, status, loop.time() - started, resumed=resumed, extra=self._health()
        )

    async def _crawl_to_resume(self, backend: Backend, seeds: SeedList) -> int | None:
        if self._fresh:
            return None
        mine, other = await backend.crawls.unfinished(seeds)
        if not mine and other:
            self._announce(
                f"crawl {other} did not finish but had other seeds; starting a new crawl "
                "(run again with its seeds to resume it)"
            )
        return mine or None

    def _rules(self) -> FleetRules:
        return _fleet_rules(self._config, self._spider)

    def _politeness(self) -> list[HostPoliteness]:
        """What the hosts still held leave their next owners (a stopped process's)."""
        return self._scheduler.politeness() if self._scheduler is not None else []

    def _health(self) -> dict[str, Any]:
        """What the crawl's row keeps of how it ran: loop lag, and each host's last settings."""
        hosts = self._scheduler.hosts() if self._scheduler is not None else {}
        busiest = sorted(hosts.items(), key=lambda item: -item[1]["in_flight"])[:TOP_HOSTS]
        health: dict[str, Any] = {
            "loop_lag_ms": self._lag.stats().as_json(),
            "stages": self._stage_times.as_json(),
            "hosts": dict(busiest),
        }
        if self._proxies is not None:
            health["proxies"] = self._proxies.stats()
        if self._sessions is not None:
            health["sessions"] = self._sessions.stats()
        return health

    def _sample_stages(self) -> None:
        if self._pipeline is not None:
            self._stage_times.add(self._pipeline.gauges(), asyncio.get_running_loop().time())

    def _on_stall(self, lag_ms: float) -> None:
        """The first stall is a warning that says what it means; the rest are INFO lines (a busy
        machine makes several a crawl), all counted in the summary's loop lag."""
        stages = self._pipeline.depths() if self._pipeline is not None else {}
        busiest = max(stages, key=lambda name: stages[name], default="unknown")
        queues = ", ".join(f"{k} {v}" for k, v in stages.items())
        self._stalls += 1
        if self._stalls == 1 and not self._quiet:
            log.warning(
                "the event loop stalled %.0f ms (queues: %s; fullest: %s): something held the "
                "crawler's thread (a busy machine, or parsing inline); further stalls are logged "
                "at INFO and counted in the summary",
                lag_ms, queues, busiest,
            )  # fmt: skip
        else:
            log.info("the event loop stalled %.0f ms (queues: %s)", lag_ms, queues)

    async def _run_pipeline(
        self,
        backend: Backend,
        crawl_id: int,
        frontier: Frontier,
        done: int,
        leases: HostLeases,
        jars: CookieJars | None,
    ) -> str:
        config = self._config
        budget = socket_budget(config.fetch.concurrency, config.parse.workers, self._open_files)
        wire = wire_for(config, budget)  # the connection slots, the fetcher's and the dispatcher's
        # The archive's writer process (storage.warc), its folder checked and torn files repaired.
        opened = Archive(config.storage) if config.storage.warc else contextlib.nullcontext(None)
        async with opened as archive:
            return await self._run_stages(
                backend, crawl_id, frontier, done, leases, jars, wire, archive
            )

    async def _run_stages(
        self,
        backend: Backend,
        crawl_id: int,
        frontier: Frontier,
        done: int,
        leases: HostLeases,
        jars: CookieJars | None,
        wire: OnTheWire,
        archive: Archive | None,
    ) -> str:
        config = self._config
        scope = config.crawl.scope()
        credentials = self._credentials or NO_CREDENTIALS
        resolver = self._resolver or make_resolver(dict(config.fetch.resolve), config.fetch.dns_ttl)
        # (a seeds file's hosts are not trusted: a list of thousands is not read by hand)
        seed_hosts = [host_of(seed) for seed in config.crawl.seeds]
        proxies = proxy_pool(config.fetch, credentials)
        self._proxies = proxies
        if config.fetch.sessions:
            self._sessions = Sessions(frozenset(config.fetch.blocked_status), jars)
        vet = None
        if proxies is not None and config.fetch.block_private:
            vet = target_vetter(resolver, AddressGuard(block=True, trusted_hosts=seed_hosts))
        fetcher = Fetcher(
            config.fetch,
            outside=scope.outside,  # the boundary of every request: pages, robots.txt, sitemaps
            # the proxies' own addresses are configuration, so trusted like the seeds'
            trusted_hosts=[*seed_hosts, *(p.url.host or "" for p in proxies.proxies)]
            if proxies is not None
            else seed_hosts,
            resolver=resolver,
            wire=wire.slots,
            listener=wire,  # (told as requests go on and off the wire: the dispatcher's side)
            types=SPIDER_TYPES if self._spider is not None else HTML_TYPES,
            archive=archive,
            identities=Identities(
                config.fetch.user_agent, credentials, jars, proxies, vet, self._sessions
            ),
        )
        async with fetcher, ParsePool(config.parse) as parser:
            stages = build_stages(
                config,
                frontier=frontier,
                leases=leases,
                pages=backend.pages(crawl_id),
                fetcher=fetcher,
                parser=parser,
                wire=wire,
                spider=self._spider,
                on_stored=self._on_stored,
                archive=archive,
            )
            scheduler, pipeline = stages.scheduler, stages.pipeline
            self._scheduler, self._pipeline, self._stored_before = scheduler, pipeline, done
            gauges = CrawlGauges(
                backend.gauges(crawl_id), self._own_gauges, count_pending=not self._quiet
            )
            self._gauges = gauges
            try:
                async with asyncio.TaskGroup() as tasks:
                    running = tasks.create_task(pipeline.run(), name="pipeline")
                    self._pipeline_task = running
                    if self._stopping:
                        self._begin_stop()
                    watch = tasks.create_task(self._lag.run(), name="loop-lag")
                    gauging = tasks.create_task(gauges.run(), name="fleet gauges")
                    try:
                        # Waited for here, not by the TaskGroup's exit, so that its failure
                        # interrupts this wait (TaskGroups handle that case cleanly). Cancelled
                        # by stop()'s grace timer, it just ends: the crawl is interrupted.
                        await asyncio.wait([running])
                    finally:
                        watch.cancel()  # it measures the loop while the pipeline runs
                        gauging.cancel()
            except asyncio.CancelledError:
                if not self._stopping:
                    raise  # cancelled from outside: recorded by run(), then keep cancelling
                return "interrupted"
            except BaseExceptionGroup as group:
                # The pipeline's own error (a group, from its TaskGroups), not wrapped once more.
                failure = group.exceptions[0] if len(group.exceptions) == 1 else group
                raise _user_error_in(group) or failure from None
            return "interrupted" if self._stopping else "finished"


def _leases(backend: Backend, crawl_id: int, config: Config, rules: FleetRules) -> HostLeases:
    """This process's host leases; with shared ones, the lease must outlast a request."""
    margin = request_margin(config.fetch)
    leases = backend.leases(crawl_id, ttl=config.storage.lease_ttl, margin=margin, rules=rules)
    if leases.shared and config.storage.lease_ttl * 5 / 6 <= margin:
        raise ConfigError(
            f"storage.lease_ttl = {config.storage.lease_ttl:g}: a lease must outlast a request's "
            f"longest time ({margin:g} s: fetch.total_timeout for each of 1 + fetch.retries "
            "attempts, and the waits between them) by a sixth; raise it to "
            f"{math.ceil(margin * 6 / 5 + 1)} or more, or lower those"
        )
    return leases


def _fleet_rules(config: Config, spider: SpiderRef | None) -> FleetRules:
    """What the backend keeps for the whole crawl: the page budgets its leases count, the
    politeness key a fleet leases hosts by, and the spider every process calls."""
    return FleetRules(
        max_pages=config.crawl.max_pages,
        max_pages_per_host=config.crawl.max_pages_per_host,
        politeness_key=config.fetch.politeness_key,
        spider=spider.digest if spider is not None else "",
    )


def _stored_config(config: Config, backend: Backend) -> str:
    """The configuration as the crawls table keeps it: storage.db as the backend shows it (a
    PostgreSQL URL without its password)."""
    storage = dataclasses.replace(config.storage, db=backend.location)
    return dataclasses.replace(config, storage=storage).to_json()


def _user_error_in(group: BaseExceptionGroup[BaseException]) -> ScraperError | None:
    """A stage's ScraperError (a full disk, say) reaches the TaskGroup wrapped; unwrap it."""
    matched, _ = group.split(ScraperError)
    found: ScraperError | BaseExceptionGroup[ScraperError] | None = matched
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found
