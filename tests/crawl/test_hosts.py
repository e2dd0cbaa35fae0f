"""Host state: AIMD throttling, and hosts released once they have nothing left to do."""

from __future__ import annotations

import time

from aiohttp import web

from helpers import base_url, crawl
from scraper.crawl.hosts import KEEP_RELEASED, HostState, HostTable, Limits, throttle
from scraper.models import CrawlRequest, FetchResult


async def test_429_with_retry_after_backs_the_host_off_and_every_page_arrives(
    aiohttp_server, make_config
):
    answered: list[tuple[int, float]] = []

    async def page(request: web.Request) -> web.Response:
        if len([s for s, _ in answered if s == 429]) < 3 and request.path != "/":
            answered.append((429, time.monotonic()))
            return web.Response(status=429, headers={"Retry-After": "1"})
        answered.append((200, time.monotonic()))
        links = "".join(f'<a href="/p/{i}">{i}</a>' for i in range(8))
        return web.Response(text=links, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/p/{i}", page)
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], crawl__obey_robots=False, fetch__retries=3)
    summary = await crawl(config)
    assert summary.pages == 9
    assert summary.by_status == {"2xx": 9}
    first_429 = min(t for s, t in answered if s == 429)
    # Requests already on their way may land just after it; then the host rests a second.
    resting = [t for _, t in answered if first_429 + 0.05 < t < first_429 + 0.95]
    assert resting == []
    assert max(t for _, t in answered) > first_429 + 0.95


def test_autothrottle_halves_on_429_then_recovers() -> None:
    limits = Limits(per_host_concurrency=8)
    host = HostState("example.com", limits)
    ok = FetchResult(request=CrawlRequest("http://example.com/"), fetched_at="", attempts=1,
                     status=200, elapsed_ms=50.0)  # fmt: skip
    throttled = FetchResult(request=CrawlRequest("http://example.com/"), fetched_at="",
                            attempts=2, status=200, elapsed_ms=50.0, throttled=True,
                            retry_after=3.0)  # fmt: skip
    throttle(host, throttled, limits, now=100.0)
    assert (host.concurrency, host.next_start) == (4, 103.0)  # halved, paused for Retry-After
    for _ in range(4 + 5 + 6 + 7):
        throttle(host, ok, limits, now=104.0)
    assert host.concurrency == 8  # one more per round of successes, back to the cap
    assert host.snapshot()["concurrency"] == 8


def test_an_idle_host_is_released_and_its_last_settings_kept() -> None:
    table = HostTable(Limits(per_host_concurrency=4, per_host_delay=0.5))
    host = table.hold("example.com")
    assert table.hold("example.com") is host and len(table) == 1
    host.maybe_pending = False
    host.next_start = 10.0  # its delay has not passed: kept, so the next request waits for it
    table.release_if_idle(host, now=9.0)
    assert table.get("example.com") is host
    table.sweep(now=10.0)
    assert len(table) == 0 and table.get("example.com") is None
    assert table.snapshot() == {"example.com": host.snapshot()}
    assert host.snapshot()["concurrency"] == 4 and host.snapshot()["delay_s"] == 0.5


def test_a_throttled_host_is_kept_until_it_recovers() -> None:
    table = HostTable(Limits())
    host = table.hold("example.com")
    host.maybe_pending = False
    host.backoff = 1.0
    table.sweep(now=100.0)
    assert len(table) == 1  # released now, it would come back at full speed
    host.backoff = 0.0
    table.sweep(now=100.0)
    assert len(table) == 0


def test_only_the_last_released_hosts_keep_their_settings() -> None:
    table = HostTable(Limits())
    for n in range(KEEP_RELEASED + 5):
        host = table.hold(f"h{n}")
        host.maybe_pending = False
        table.release_if_idle(host, now=0.0)
    assert list(table.snapshot()) == [f"h{n}" for n in range(5, KEEP_RELEASED + 5)]
