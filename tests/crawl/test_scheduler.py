"""The dispatcher: hand-outs, the end of a crawl, and the tasks it owns (refills, robots.txt,
the crawl's own work such as sitemaps).

The unit tests run it over an in-memory Frontier with workers that answer at once; the crawl
tests at the end run whole crawls against servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiohttp import web

from bench.dispatch import answered, run_dispatcher
from helpers import MemoryFrontier, Site, base_url, crawl
from scraper.crawl.commit_now import CommitNow
from scraper.crawl.hosts import Limits
from scraper.crawl.ports import FetchStage, HostRules
from scraper.crawl.robots import RobotsGate
from scraper.crawl.scheduler import Scheduler
from scraper.domains import registrable_domain
from scraper.errors import StorageError
from scraper.models import CrawlRequest, FetchResult
from scraper.store.base import HostPoliteness
from scraper.store.sqlite.leases import SqliteHostLeases
from scraper.urls import host_key


def scheduler_over(frontier: MemoryFrontier, limits: Limits, **options: Any) -> Scheduler:
    """A dispatcher on `frontier`, alone on its crawl: SQLite's host leases, in memory."""
    return Scheduler(frontier, limits, leases=SqliteHostLeases(frontier), **options)


class AllowAll:
    delay: float | None = None
    unavailable = False

    def skip_reason(self, url: str) -> str | None:
        return None


class Gate:
    """A HostGate that allows everything and calls `on_rules` the first time a host is met."""

    def __init__(self, on_rules: Callable[[str], None]) -> None:
        self._on_rules = on_rules

    async def settled_rules(self, host: str, sample_url: str) -> HostRules:
        self._on_rules(host)
        return AllowAll()

    async def adopt(self, record: str) -> None:
        pass


URLS = [f"http://{host}.example/{n}" for host in ("a", "b") for n in range(5)]


async def dispatch(scheduler: Scheduler, workers: int = 3) -> list[str]:
    """Run the dispatcher and its workers, which answer at once, to the end: every URL handed
    out."""
    return await run_dispatcher(scheduler, workers, to_sink=0.0)


async def test_every_url_is_handed_out_once_and_the_hosts_are_released() -> None:
    frontier = MemoryFrontier(URLS)
    scheduler = scheduler_over(
        frontier, Limits(per_host_concurrency=2), gate=lambda polite: Gate(lambda host: None)
    )
    assert sorted(await dispatch(scheduler)) == sorted(URLS)
    assert frontier.pending == {}
    assert scheduler.handed == len(URLS) and scheduler.unstored == 0
    assert scheduler.held_hosts() == 0  # no host state kept once a host is idle
    assert set(scheduler.hosts()) == {"a.example", "b.example"}  # but its last settings


async def test_max_pages_ends_the_crawl() -> None:
    frontier = MemoryFrontier(URLS, max_pages=3)
    scheduler = scheduler_over(frontier, Limits())
    assert len(await dispatch(scheduler)) == 3


@pytest.mark.looptime
async def test_the_crawl_is_not_over_while_a_crawl_task_runs() -> None:
    ended: list[float] = []

    async def read_sitemaps() -> None:
        await asyncio.sleep(0.2)
        ended.append(asyncio.get_running_loop().time())

    def on_rules(host: str) -> None:
        scheduler.start_crawl_task(read_sitemaps(), name=f"sitemaps {host}")

    scheduler = scheduler_over(
        MemoryFrontier(URLS[:1]), Limits(), gate=lambda polite: Gate(on_rules)
    )
    assert await dispatch(scheduler) == URLS[:1]
    assert len(ended) == 1  # dispatch() returned after the task, not before


async def test_a_crawl_task_that_fails_fails_the_dispatcher() -> None:
    async def broken() -> None:
        raise ValueError("a bug in a crawl task")

    def on_rules(host: str) -> None:
        scheduler.start_crawl_task(broken(), name="broken")

    scheduler = scheduler_over(MemoryFrontier(URLS), Limits(), gate=lambda polite: Gate(on_rules))
    with pytest.raises(BaseExceptionGroup) as caught:
        await asyncio.wait_for(dispatch(scheduler), 5)
    matched, _ = caught.value.split(ValueError)
    assert matched is not None


async def test_a_refill_that_fails_fails_the_dispatcher() -> None:
    class Broken(MemoryFrontier):
        async def lease(self, host: str, limit: int) -> list[CrawlRequest]:
            raise StorageError("disk full")

    scheduler = scheduler_over(Broken(URLS), Limits())
    with pytest.raises(BaseExceptionGroup) as caught:
        await asyncio.wait_for(dispatch(scheduler), 5)
    matched, _ = caught.value.split(StorageError)
    assert matched is not None


async def test_stop_cancels_the_crawl_tasks_still_running() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    def on_rules(host: str) -> None:
        scheduler.start_crawl_task(forever(), name="forever")
        scheduler.stop()

    scheduler = scheduler_over(MemoryFrontier(URLS), Limits(), gate=lambda polite: Gate(on_rules))
    await asyncio.wait_for(dispatch(scheduler), 5)  # every worker got its None
    assert cancelled.is_set()


async def test_start_crawl_task_needs_a_running_dispatcher() -> None:
    async def nothing() -> None:
        pass

    scheduler = scheduler_over(MemoryFrontier(URLS), Limits())
    with pytest.raises(RuntimeError, match="not running"):
        scheduler.start_crawl_task(nothing(), name="too early")  # closed, never awaited: no warning


# Whole crawls: the per-host limits as a server sees them --------------------------------------


async def test_per_host_concurrency_is_never_exceeded(aiohttp_server, make_config):
    """As a server sees a whole crawl: never more than two at once. (The delay between starts
    is checked on the loop's clock, test_the_per_host_delay_and_concurrency_hold_exactly_on_the_
    loops_clock: arrivals measured in real time on a busy machine are off by tenths.)"""
    site = Site(12, latency=0.25)  # long enough for two to overlap, never three
    server = await aiohttp_server(site.app)
    config = make_config(
        [base_url(server)], fetch__concurrency=16, fetch__per_host_concurrency=2,
        fetch__per_host_delay=0.1, crawl__obey_robots=False,
    )  # fmt: skip
    await crawl(config)
    assert len(site.starts) == 13
    assert site.most_active == 2


async def test_a_slow_host_does_not_hold_up_a_fast_one(aiohttp_server, make_config):
    """Issue 13: pages were committed at once only while the whole crawl had nothing queued, so
    while the slow host had requests queued, each of the fast host's pages waited
    storage.flush_interval before its links could be leased. With a long flush interval that
    wait shows in counts: the fast host's chain of pages (each links to the next, so each level
    needs the one before committed) must be done while the slow host serves its first few."""
    served: list[float] = []

    async def chain(request: web.Request) -> web.Response:
        served.append(asyncio.get_running_loop().time())
        n = int(request.match_info.get("n", 0))
        link = f'<a href="/c/{n + 1}">next</a>' if n < 15 else ""
        return web.Response(text=link, content_type="text/html")

    fast = web.Application()
    fast.router.add_get("/", chain)
    fast.router.add_get("/c/{n}", chain)
    slow = Site(6, latency=0.5)
    fast_server, slow_server = await aiohttp_server(fast), await aiohttp_server(slow.app)
    # The slow host's pages are seeds too: it has requests queued from the start.
    slow_urls = [base_url(slow_server), *(f"{base_url(slow_server)}p/{i}" for i in range(6))]
    config = make_config(
        [*slow_urls, base_url(fast_server)], fetch__per_host_concurrency=1,
        crawl__obey_robots=False, storage__flush_interval=30.0, storage__batch_size=1000,
    )  # fmt: skip
    summary = await crawl(config)
    assert summary.pages == 16 + 7
    assert len(served) == 16
    # The slow host's requests when the fast chain ended: it sent 7 in all, one each 0.5 s
    # (before the fix, all 7: the chain waited for the slow host to have nothing queued).
    assert len(slow.starts_before(max(served))) <= 3


async def test_robots_txt_and_the_sitemap_probe_go_to_the_server_one_at_a_time(
    aiohttp_server, make_config
):
    """Issue 13, as a server sees a whole crawl: robots.txt comes first, the sitemap probe is
    a request like the pages, and with one request at a time per host none overlap. (The gaps
    between starts are checked on the loop's clock below: arrival times measured in real time
    on a busy machine are off by more than a tenth of a second.)"""
    site = Site(3, robots="User-agent: *\nAllow: /\n")
    server = await aiohttp_server(site.app)
    config = make_config(
        [base_url(server)], fetch__per_host_delay=0.05, fetch__per_host_concurrency=1,
        crawl__sitemaps=True,
    )  # fmt: skip
    await crawl(config)
    paths = [path for path, _ in sorted(site.starts, key=lambda item: item[1])]
    assert paths[0] == "/robots.txt" and "/sitemap.xml" in paths and len(paths) == 6
    assert site.most_active == 1


class Server:
    """A FetchStage that stands for a server on the loop's clock: each request is logged with
    the moment it starts, takes `latency`, and is answered (robots.txt with `robots`, a
    sitemap with 404, a page with 200). `most_active`: the most requests at once."""

    def __init__(self, robots: str, latency: float) -> None:
        self.robots = robots
        self.latency = latency
        self.starts: list[tuple[str, float]] = []
        self.active = self.most_active = 0

    async def fetch(self, request: CrawlRequest, **options: Any) -> FetchResult:
        path = "/" + request.url.split("/", 3)[3]
        self.starts.append((path, asyncio.get_running_loop().time()))
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.active -= 1
        if path == "/robots.txt":
            return FetchResult(request, fetched_at="", attempts=1, status=200,
                               body=self.robots.encode())  # fmt: skip
        status = 404 if path == "/sitemap.xml" else 200
        return FetchResult(request, fetched_at="", attempts=1, status=status, elapsed_ms=1.0)


@pytest.mark.looptime
async def test_robots_txt_takes_a_turn_and_starts_the_delay() -> None:
    """Issue 13: the first page of a host went out right after its robots.txt, whatever the
    per-host delay said. robots.txt (through the real RobotsGate) and the sitemap probe take
    their turn on the host's slot like the pages: on the loop's clock, every start is exactly
    one delay after the one before, robots.txt first, and none overlap."""
    urls = ["http://a.example/", *(f"http://a.example/p/{n}" for n in range(3))]
    server = Server("User-agent: *\nAllow: /\n", latency=0.125)
    scheduler: Scheduler

    def probe_sitemap(site: str, declared: tuple[str, ...]) -> None:
        probe = scheduler.polite.fetch(CrawlRequest(f"{site}/sitemap.xml"), any_type=True)
        scheduler.start_crawl_task(_ended(probe), name=f"sitemaps {site}")

    def gate(polite: FetchStage) -> RobotsGate:
        return RobotsGate(polite, "test-agent", timeout=5.0, on_sitemaps=probe_sitemap)

    scheduler = scheduler_over(
        MemoryFrontier(urls),
        Limits(per_host_concurrency=1, per_host_delay=0.5),
        fetch=server,
        gate=gate,
    )
    began = asyncio.get_running_loop().time()

    await run_dispatcher(scheduler, 2, server.fetch)
    paths = [path for path, _ in server.starts]
    assert paths[0] == "/robots.txt" and sorted(paths[1:]) == sorted(
        ["/sitemap.xml", "/", "/p/0", "/p/1", "/p/2"]
    )
    assert [at - began for _, at in server.starts] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert server.most_active == 1


async def _ended(work: Coroutine[Any, Any, FetchResult]) -> None:
    await work


async def test_hosts_beyond_the_window_wait_in_the_frontier() -> None:
    """More hosts than the dispatcher holds at once: every URL is handed out once, and the hosts
    held never exceed the window."""
    urls = [f"http://h{n}.example/{page}" for n in range(300) for page in range(2)]
    scheduler = scheduler_over(MemoryFrontier(urls), Limits(per_host_concurrency=1, max_hosts=20))
    held: list[int] = []

    async def fetch(request: CrawlRequest) -> FetchResult:
        held.append(scheduler.held_hosts())
        return answered(request)

    handed = await run_dispatcher(scheduler, 4, fetch)
    assert sorted(handed) == sorted(urls)
    assert max(held) <= 20
    assert scheduler.held_hosts() == 0 and scheduler.held_slots() == 0


@pytest.mark.looptime
async def test_hosts_of_one_domain_share_its_politeness() -> None:
    """fetch.politeness_key = "domain": a.example.com and b.example.com are one slot (one
    request at a time between them); other.org is another, crawled alongside."""
    urls = [f"http://{host}/{n}" for host in ("a.example.com", "b.example.com", "other.org")
            for n in range(4)]  # fmt: skip
    scheduler = scheduler_over(
        MemoryFrontier(urls),
        Limits(per_host_concurrency=1),
        key_of=lambda host: registrable_domain(host),
    )
    active: dict[str, int] = {}
    most: dict[str, int] = {}
    together = 0

    async def fetch(request: CrawlRequest) -> FetchResult:
        nonlocal together
        key = registrable_domain(host_key(request.url))
        active[key] = active.get(key, 0) + 1
        most[key] = max(most.get(key, 0), active[key])
        together = max(together, sum(active.values()))
        await asyncio.sleep(0.01)
        active[key] -= 1
        return answered(request)

    await run_dispatcher(scheduler, 4, fetch)
    assert most == {"example.com": 1, "other.org": 1}
    assert together == 2
    assert scheduler.handed == 12


@pytest.mark.parametrize(
    ("key", "names", "most_active"),
    [
        ("host", ("a.site.test", "b.site.test"), 2),
        ("domain", ("a.site.test", "b.site.test"), 1),
        ("ip", ("localhost", "127.0.0.1"), 1),
    ],
)
async def test_politeness_key_in_whole_crawls(aiohttp_server, make_config, key, names, most_active):
    """Two names of one server: with the key "domain" (the same registrable domain) or "ip" (the
    same address, after DNS), one request at a time reaches it; with "host", one per name."""
    site = Site(6, latency=0.05)
    server = await aiohttp_server(site.app)
    seeds = [f"http://{name}:{server.port}/" for name in names]
    config = make_config(
        seeds, fetch__per_host_concurrency=1, fetch__politeness_key=key,
        fetch__resolve={"a.site.test": "127.0.0.1", "b.site.test": "127.0.0.1"},
    )  # fmt: skip
    summary = await crawl(config)
    assert summary.pages == 14
    assert site.most_active == most_active


async def test_idle_connections_to_hosts_with_nothing_queued_are_closed(
    aiohttp_server, make_config
):
    """Forty one-page sites (forty names of one server): each host's connection is closed once
    its page is fetched, so the connections open at once stay under fetch.concurrency plus the
    budget of idle ones, not one per host met (aiohttp keeps each for 15 s)."""
    site = Site(0)
    names = {f"h{n}.test": "127.0.0.1" for n in range(40)}
    open_now: list[int] = []

    @web.middleware
    async def count(request: web.Request, handler: Any) -> web.StreamResponse:
        open_now.append(len(server.runner.server.connections))
        return await handler(request)

    site.app.middlewares.append(count)
    server = await aiohttp_server(site.app)
    seeds = [f"http://{name}:{server.port}/" for name in names]
    config = make_config(seeds, fetch__concurrency=4, fetch__resolve=names)
    summary = await crawl(config)
    assert summary.pages == 40
    assert len(site.fetched()) == 40
    assert max(open_now) <= 4 + 4  # concurrency, and as many idle (the keep-alive budget)


async def test_max_pages_per_host_is_a_cap(aiohttp_server, make_config):
    site = Site(30)
    server = await aiohttp_server(site.app)
    config = make_config([base_url(server)], crawl__max_pages_per_host=10)
    summary = await crawl(config)
    assert summary.pages == 10
    assert len(site.fetched()) == 10


async def test_a_retry_waits_for_the_hosts_delay_too(aiohttp_server, make_config):
    """A 503 retried after a 10 ms backoff: the retry still starts a per-host delay after the
    first attempt did, as the server sees it."""
    starts: list[float] = []

    async def flaky(request: web.Request) -> web.Response:
        starts.append(time.monotonic())
        if len(starts) == 1:
            return web.Response(status=503)
        return web.Response(text="<title>ok</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", flaky)
    server = await aiohttp_server(app)
    config = make_config(
        [base_url(server)], fetch__per_host_delay=0.5, fetch__retries=1,
        fetch__retry_backoff=0.01, crawl__obey_robots=False, fetch__autothrottle=False,
    )  # fmt: skip
    summary = await crawl(config)
    assert summary.by_status == {"2xx": 1}
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.47


@pytest.mark.looptime
async def test_the_sink_is_hurried_only_when_a_host_waits_for_its_links() -> None:
    """While the one host has URLs to fetch, idle workers (its slot is full) are no reason to
    commit pages one by one: their links are not needed yet. Once it has none left but in
    unstored pages, they are (the sink is told, `CommitNow`)."""
    frontier = MemoryFrontier([f"http://a.example/{n}" for n in range(40)])
    left_when_hurried: list[int] = []
    scheduler: Scheduler

    class Hurried(CommitNow):
        def want(self, eager: bool) -> None:
            if eager and not self.eager:
                left_when_hurried.append(len(frontier.pending) + scheduler.queued())
            super().want(eager)

    scheduler = scheduler_over(frontier, Limits(per_host_concurrency=2), commit_now=Hurried())

    assert len(await run_dispatcher(scheduler, 6, to_sink=0.005)) == 40
    assert all(left == 0 for left in left_when_hurried), left_when_hurried


async def until(condition: Callable[[], bool], within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


class MemoryLeases:
    """Shared HostLeases over a MemoryFrontier, for one process: `share` is what fair_share
    answers (a test lowers it, as if other processes had joined). A release gives the host's
    URLs leased and not stored back to pending, as PostgreSQL's does."""

    shared = True
    renew_every = 3600.0

    def __init__(self, frontier: MemoryFrontier, share: int) -> None:
        self.frontier = frontier
        self.share = share
        self.mine: set[str] = set()
        self.stored: set[str] = set()
        self.events: list[tuple[str, str, int]] = []  # ("handed", url, 0), ("released", host, n)

    async def claim(self, limit: int) -> list[HostPoliteness]:
        free = [h for h in await self.frontier.pending_hosts(1000) if h not in self.mine]
        taken = free[: max(0, min(limit, self.share - len(self.mine)))]
        self.mine.update(taken)
        return [HostPoliteness(host) for host in taken]

    async def fair_share(self) -> int:
        return self.share

    def take(self, host: str) -> HostPoliteness | None:
        return None

    def holds(self, host: str) -> bool:
        return host in self.mine

    def valid(self, host: str, now: float) -> bool:
        return host in self.mine

    async def renew(self) -> list[str]:
        return []

    def release(self, state: HostPoliteness) -> Coroutine[Any, Any, None]:
        self.mine.discard(state.host)
        return self._give_back(state.host)

    async def _give_back(self, host: str) -> None:
        back = [u for u in self.frontier.leased if host_key(u) == host and u not in self.stored]
        for url in back:
            self.frontier.leased.remove(url)
            self.frontier.pending[url] = CrawlRequest(url)
        self.events.append(("released", host, len(back)))

    async def remember_robots(self, host: str, record: str) -> None:
        pass

    async def over(self) -> bool:
        return not self.frontier.pending and not self.mine

    async def close(self, status: str) -> None:
        pass


@pytest.mark.looptime
async def test_a_busy_host_over_the_fair_share_is_drained_and_handed_back() -> None:
    """Two hosts, each with a request in flight at every moment, one over the share once
    another process joins: it is sent nothing more, and goes back (its queued URLs to pending)
    once its request is stored; this process takes it again when its other host is done."""
    urls = [f"http://{host}.example/{n}" for host in ("a", "b") for n in range(5)]
    frontier = MemoryFrontier(urls)
    leases = MemoryLeases(frontier, share=2)
    # One fetch slot per host, one host's worth of slots: both hosts claimed (a claim takes
    # the share), and one of them is more than this process's slots need once the share is 1.
    scheduler = Scheduler(frontier, Limits(per_host_concurrency=1), leases=leases, concurrency=1)
    handed: list[str] = []

    async def fetch(request: CrawlRequest) -> FetchResult:
        assert host_key(request.url) in leases.mine  # never a host that is not ours
        handed.append(request.url)
        leases.events.append(("handed", request.url, 0))
        if len(handed) == 2:  # a request in flight at each host: another process joins
            leases.share = 1
        # In flight until one host is being handed back.
        await until(lambda: len(handed) >= 2 and scheduler.hosts_held == 1)
        leases.stored.add(request.url)  # (stored next: a release gives back only the others)
        return answered(request)

    await asyncio.wait_for(run_dispatcher(scheduler, 2, fetch), 60)
    assert sorted(handed) == sorted(urls)  # each once
    released = [(host, back) for kind, host, back in leases.events if kind == "released"]
    drained, given_back = released[0]
    assert given_back > 0  # it still had queued URLs: they went back to pending
    before = leases.events[: leases.events.index(("released", drained, given_back))]
    assert [url for kind, url, _ in before if host_key(url) == drained] == [
        url for url in handed[:2] if host_key(url) == drained
    ]  # nothing sent there after its first request, until it was released


# On a controlled clock (looptime: the loop's time jumps to its next timer when it has nothing
# else to do), so delays of seconds are checked exactly, in milliseconds of the test's time. --


@pytest.mark.looptime
async def test_the_per_host_delay_and_concurrency_hold_exactly_on_the_loops_clock() -> None:
    """Each fetch takes 0.5 s and each host has a delay of 2 s and one request at a time: a
    host's starts are exactly 2 s apart, while the other host's go on beside them."""
    urls = [f"http://{host}.example/{n}" for host in ("a", "b") for n in range(5)]
    scheduler = scheduler_over(
        MemoryFrontier(urls), Limits(per_host_concurrency=1, per_host_delay=2.0)
    )
    loop = asyncio.get_running_loop()
    began = loop.time()
    starts: dict[str, list[float]] = {"a.example": [], "b.example": []}

    async def fetch(request: CrawlRequest) -> FetchResult:
        starts[host_key(request.url)].append(round(loop.time() - began, 6))
        await asyncio.sleep(0.5)
        return answered(request)

    await run_dispatcher(scheduler, 3, fetch)
    assert starts == {
        "a.example": [0.0, 2.0, 4.0, 6.0, 8.0],
        "b.example": [0.0, 2.0, 4.0, 6.0, 8.0],
    }


@pytest.mark.looptime
async def test_a_throttled_host_waits_out_its_retry_after_on_the_loops_clock() -> None:
    """A 429 with Retry-After: 30 pauses its host for exactly that long (autothrottle), and the
    crawl is not over meanwhile."""
    urls = [f"http://a.example/{n}" for n in range(3)]
    scheduler = scheduler_over(MemoryFrontier(urls), Limits(per_host_concurrency=1))
    loop = asyncio.get_running_loop()
    began = loop.time()
    starts: list[float] = []

    async def fetch(request: CrawlRequest) -> FetchResult:
        starts.append(round(loop.time() - began, 6))
        if len(starts) > 1:
            return answered(request)
        return answered(request, status=429, throttled=True, retry_after=30.0)

    await run_dispatcher(scheduler, 2, fetch)
    assert starts[0] == 0.0 and starts[1] == 30.0


class LateLeases(MemoryLeases):
    """MemoryLeases whose leases last `ttl` seconds from their claim or renewal, and are valid
    for a request only while `margin` seconds of that are left, as PostgreSQL's: with renewals
    every `renew_every` seconds and that later than `ttl - margin`, each lease spends part of
    every period too short for a request, as under load. `checks` counts the dispatcher's
    looks at a lease since the last renewal: a dispatcher that spins on an invalid lease
    instead of yielding to the renewal looks without end."""

    renew_every = 1.0
    ttl = 1.0
    margin = 0.5
    SPINNING = 10_000  # looks at leases between two renewals: far above a working dispatcher's

    def __init__(self, frontier: MemoryFrontier, share: int) -> None:
        super().__init__(frontier, share)
        self.until: dict[str, float] = {}
        self.renewals = 0
        self.checks = 0

    async def claim(self, limit: int) -> list[HostPoliteness]:
        grants = await super().claim(limit)
        now = asyncio.get_running_loop().time()
        self.until.update((grant.host, now + self.ttl) for grant in grants)
        return grants

    def valid(self, host: str, now: float) -> bool:
        self.checks += 1
        assert self.checks < self.SPINNING, "the dispatcher spins on a lease: no renewal ran"
        return host in self.mine and now + self.margin < self.until[host]

    async def renew(self) -> list[str]:
        self.renewals += 1
        self.checks = 0
        now = asyncio.get_running_loop().time()
        self.until.update((host, now + self.ttl) for host in self.mine)
        return []


@pytest.mark.looptime
async def test_late_renewals_do_not_make_the_dispatcher_spin() -> None:
    """Renewals come late (as under load): each lease is too short for a request for half of
    every renewal period. Nothing starts under such a lease (the dispatcher drops the host
    then), the renewals and claims run in between (it yields: `LateLeases.SPINNING` bounds its
    looks at leases between two renewals), and every URL is still handed out once."""
    urls = [f"http://{host}.example/{n}" for host in ("a", "b", "c") for n in range(12)]
    frontier = MemoryFrontier(urls)
    leases = LateLeases(frontier, share=3)
    # (Times that are sums of powers of two: the controlled clock stops at a timer's exact
    # moment, and 0.4 + 0.2 is a hair past 0.6 in floating point: a wake a hair early, again
    # and again, the clock never moving on.)
    scheduler = Scheduler(frontier, Limits(per_host_delay=0.25), leases=leases, concurrency=3)
    loop = asyncio.get_running_loop()

    async def fetch(request: CrawlRequest) -> FetchResult:
        until = leases.until[host_key(request.url)]
        assert loop.time() + leases.margin < until  # the lease outlives the request
        await asyncio.sleep(0.125)
        leases.stored.add(request.url)  # (stored next: a release gives back only the others)
        return answered(request)

    handed = await run_dispatcher(scheduler, 3, fetch)
    assert sorted(handed) == sorted(urls)  # each once
    assert leases.renewals >= 2  # the crawl outlasted a lease: renewals ran in between
    assert any(kind == "released" and back for kind, _, back in leases.events)  # drops happened
