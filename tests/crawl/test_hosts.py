"""Host and slot state: AIMD throttling (429 and Retry-After), hosts and slots released once they
have nothing left to do."""

from __future__ import annotations

import time

from aiohttp import web

from helpers import base_url, crawl
from scraper.crawl.hosts import KEEP_RELEASED, THROTTLE_MEMORY, HostTable, Limits, Slot, throttle
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


def _result(status: int = 200, **extra: object) -> FetchResult:
    request = CrawlRequest("http://example.com/")
    return FetchResult(request=request, fetched_at="", attempts=1, status=status,
                       elapsed_ms=50.0, **extra)  # type: ignore[arg-type]  # fmt: skip


def test_autothrottle_halves_on_429_then_recovers() -> None:
    limits = Limits(per_host_concurrency=8)
    slot = Slot("example.com", limits)
    throttle(slot, _result(throttled=True, retry_after=3.0), limits, now=100.0)
    assert (slot.concurrency, slot.next_start) == (4, 103.0)  # halved, paused for Retry-After
    for _ in range(4 + 5 + 6 + 7):
        throttle(slot, _result(), limits, now=104.0)
    assert slot.concurrency == 8  # one more per round of successes, back to the cap
    assert slot.snapshot()["concurrency"] == 8


def test_retry_after_is_the_pause_however_often_it_comes() -> None:
    """Issue 13: a rate limiter answering each new URL's first request with 429 and
    Retry-After: 1 drove the pause to 8, 16, 32 s (a backoff doubling per 429)."""
    limits = Limits(per_host_concurrency=1, max_retry_after=60.0)
    slot = Slot("example.com", limits)
    now = 0.0
    for _ in range(10):
        throttle(slot, _result(throttled=True, retry_after=1.0), limits, now=now)
        assert slot.next_start == now + 1.0  # what the server asked, each time
        now += 1.0
        throttle(slot, _result(), limits, now=now)
    assert slot.backoff == 0.0


def test_retry_after_is_capped_by_max_retry_after() -> None:
    limits = Limits(max_retry_after=5.0)
    slot = Slot("example.com", limits)
    throttle(slot, _result(throttled=True, retry_after=3600.0), limits, now=10.0)
    assert slot.next_start == 15.0


def test_without_retry_after_the_backoff_doubles_and_a_round_of_successes_clears_it() -> None:
    limits = Limits(per_host_concurrency=1)
    slot = Slot("example.com", limits)
    pauses = []
    for now in (0.0, 100.0, 200.0, 300.0):
        throttle(slot, _result(throttled=True), limits, now=now)
        pauses.append(slot.next_start - now)
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    throttle(slot, _result(), limits, now=400.0)  # a round: as many as its concurrency (1)
    assert slot.backoff == 0.0
    throttle(slot, _result(throttled=True), limits, now=500.0)
    assert slot.next_start == 501.0  # from the start again


def test_an_idle_host_is_released_and_its_slot_after_its_delay() -> None:
    table = HostTable(Limits(per_host_concurrency=4, per_host_delay=0.5))
    host, new = table.hold("example.com")
    assert new and table.hold("example.com") == (host, False) and len(table) == 1
    slot = table.join(host, "example.com")
    slot.next_start = 10.0  # its delay has not passed: the slot is kept, so the next waits
    assert table.release_if_idle(host, now=9.0)
    assert len(table) == 0 and table.slots() == 1
    table.cool(now=10.0)
    assert table.slots() == 0
    assert table.snapshot() == {"example.com": slot.snapshot()}
    assert slot.snapshot()["concurrency"] == 4 and slot.snapshot()["delay_s"] == 0.5


def test_a_throttled_slot_is_remembered_a_while_then_forgotten() -> None:
    table = HostTable(Limits())
    host, _ = table.hold("example.com")
    slot = table.join(host, "example.com")
    slot.backoff = 1.0
    table.release_if_idle(host, now=100.0)
    table.cool(now=100.0 + THROTTLE_MEMORY - 1)
    assert table.slots() == 1  # released now, it would come back at full speed
    again, _ = table.hold("example.com")
    assert table.join(again, "example.com") is slot  # and it does not
    table.release_if_idle(again, now=101.0)
    table.cool(now=100.0 + THROTTLE_MEMORY)
    assert table.slots() == 1  # its first release's time no longer counts
    table.cool(now=101.0 + THROTTLE_MEMORY)
    assert table.slots() == 0


def test_hosts_of_one_key_share_a_slot() -> None:
    table = HostTable(Limits())
    a, _ = table.hold("a.example.com")
    b, _ = table.hold("b.example.com")
    assert table.join(a, "example.com") is table.join(b, "example.com")
    assert table.slots() == 1


def test_only_the_last_released_slots_keep_their_settings() -> None:
    table = HostTable(Limits())
    for n in range(KEEP_RELEASED + 5):
        host, _ = table.hold(f"h{n}")
        table.join(host, f"h{n}")
        table.release_if_idle(host, now=0.0)
    assert list(table.snapshot()) == [f"h{n}" for n in range(5, KEEP_RELEASED + 5)]
