"""robots.txt in whole crawls: disallowed URLs recorded, RFC 9309's 4xx and 5xx, Crawl-delay."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest
from aiohttp import web

from helpers import Site, base_url, crawl, rows


async def stored(db: str) -> dict[str, tuple[Any, ...]]:
    return {
        url: tuple(rest)
        for url, *rest in await rows(db, "SELECT url, status, error_kind, error FROM pages")
    }


ROBOTS = """
User-agent: otherbot
Disallow: /

User-agent: *
Disallow: /p/1
Disallow: /p/2
"""


async def test_robots_disallowed_urls_are_skipped_and_recorded(aiohttp_server, make_config):
    site = Site(3, robots=ROBOTS)
    server = await aiohttp_server(site.app)
    root = base_url(server)
    config = make_config([root])
    await crawl(config)
    pages = await stored(config.storage.db)
    assert sorted(site.fetched()) == ["/", "/p/0"]
    assert pages[root + "p/1"] == (None, "robots", "disallowed by robots.txt")
    assert pages[root + "p/2"][1] == "robots"
    assert [p for p, _ in site.starts].count("/robots.txt") == 1  # fetched once per host


async def test_robots_wildcards(aiohttp_server, make_config):
    async def index(request: web.Request) -> web.Response:
        links = '<a href="/a.pdf">a</a><a href="/a.pdf?x=1">b</a><a href="/doc/a.html">c</a>'
        return web.Response(text=links, content_type="text/html")

    async def robots(request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nDisallow: /*.pdf$\nDisallow: /doc/*.html\n")

    async def anything(request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/{p:.+}", anything)
    server = await aiohttp_server(app)
    root = base_url(server)
    config = make_config([root], crawl__skip_extensions=[])
    await crawl(config)
    kinds = {url: kind for url, (_, kind, _) in (await stored(config.storage.db)).items()}
    assert kinds == {root: None, root + "a.pdf": "robots", root + "a.pdf?x=1": None,
                     root + "doc/a.html": "robots"}  # fmt: skip


async def test_robots_404_allows_everything(aiohttp_server, make_config):
    site = Site(3, robots=404)
    server = await aiohttp_server(site.app)
    config = make_config([base_url(server)])
    summary = await crawl(config)
    assert summary.pages == 4
    assert summary.by_error == {}


async def test_robots_500_disallows_the_host_and_is_asked_again_later(aiohttp_server, make_config):
    site = Site(3, robots=500)
    server = await aiohttp_server(site.app)
    config = make_config([base_url(server)], fetch__retries=1, fetch__retry_backoff_max=0.3)
    summary = await crawl(config)
    assert site.fetched() == []
    assert summary.by_error == {"robots": 1}
    ((error,),) = await rows(config.storage.db, "SELECT error FROM pages")
    assert error.startswith("robots.txt unavailable")
    asked = [t for p, t in site.starts if p == "/robots.txt"]
    assert len(asked) == 3 * 2  # three rounds, each an attempt and its retry
    assert asked[2] - asked[1] >= 0.29  # a round waits fetch.retry_backoff_max


async def test_robots_back_after_an_outage_lets_the_crawl_go_on(aiohttp_server, make_config):
    site = Site(3, robots=503)
    calls = 0

    async def flaky_robots(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        site.starts.append((request.path, time.monotonic()))
        if calls <= 2:  # the first round fails, attempt and retry
            return web.Response(status=503)
        return web.Response(text="User-agent: *\nDisallow: /p/1\n")

    app = web.Application()
    app.router.add_get("/robots.txt", flaky_robots)
    app.router.add_get("/", site.page)
    app.router.add_get("/{path:.+}", site.page)
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], fetch__retries=1, fetch__retry_backoff_max=0.2)
    summary = await crawl(config)
    assert sorted(site.fetched()) == ["/", "/p/0", "/p/2"]
    assert summary.by_error == {"robots": 1}  # /p/1, disallowed once robots.txt answered


async def test_malformed_robots_txt_does_not_crash(aiohttp_server, make_config):
    site = Site(2, robots="\x00\xff garbage\nDisallow\nUser-agent\n:::\nCrawl-delay: soon\n" * 50)
    server = await aiohttp_server(site.app)
    summary = await crawl(make_config([base_url(server)]))
    assert summary.pages == 3


async def test_obey_robots_false_ignores_it(aiohttp_server, make_config):
    site = Site(2, robots="User-agent: *\nDisallow: /\n")
    server = await aiohttp_server(site.app)
    summary = await crawl(make_config([base_url(server)], crawl__obey_robots=False))
    assert summary.pages == 3
    assert all(path != "/robots.txt" for path, _ in site.starts)


async def test_crawl_delay_spaces_the_requests(aiohttp_server, make_config):
    site = Site(4, robots="User-agent: *\nCrawl-delay: 0.2\n")
    server = await aiohttp_server(site.app)
    await crawl(make_config([base_url(server)], fetch__per_host_concurrency=4))
    starts = [t for path, t in site.starts if path != "/robots.txt"]
    assert len(starts) == 5
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.18


@pytest.mark.parametrize("delay", ["100000", "1e308"])
async def test_a_crawl_delay_over_the_cap_skips_the_host(aiohttp_server, make_config, delay):
    """Crawl-delay: 100000 would stop the host for a day, 1e308 for ever (and print 300
    digits): over fetch.max_crawl_delay, the host is skipped with the reason."""
    site = Site(3, robots=f"User-agent: *\nCrawl-delay: {delay}\nDisallow: /nothing\n")
    server = await aiohttp_server(site.app)
    root = base_url(server)
    config = make_config([root], fetch__max_crawl_delay=30)
    summary = await crawl(config)
    assert summary.status == "finished"
    assert site.fetched() == []
    ((kind, error),) = await rows(config.storage.db, "SELECT error_kind, error FROM pages")
    shown = "1e+05" if delay == "100000" else "1e+308"
    assert kind == "robots"
    assert error == (
        f"robots.txt asks for a Crawl-delay of {shown} s, over fetch.max_crawl_delay (30 s): "
        "host skipped"
    )
    hosts = json.loads((await rows(config.storage.db, "SELECT counters FROM crawls"))[0][0])
    assert len(str(hosts)) < 2000  # no 300-digit delay anywhere


async def test_a_crawl_delay_within_the_cap_is_kept(aiohttp_server, make_config):
    site = Site(1, robots="User-agent: *\nCrawl-delay: 0.2\n")
    server = await aiohttp_server(site.app)
    summary = await crawl(make_config([base_url(server)], fetch__max_crawl_delay=0.5))
    assert summary.pages == 2 and summary.errors == 0


async def test_a_robots_txt_over_500_kib_is_read_up_to_there(aiohttp_server, make_config):
    """RFC 9309: at least the first 500 KiB are parsed, the rest ignored, and no more read. A
    rule past the limit is not seen; one before it is; the host is not "unreachable"."""
    filler = "# " + "x" * 97 + "\n"
    before = "User-agent: *\nDisallow: /p/0\n"
    after = "Disallow: /p/1\n"
    body = before + filler * 6000 + after  # ~600 KB, the second rule past 500 KiB

    async def robots(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        data = body.encode()
        try:
            for start in range(0, len(data), 16384):
                await response.write(data[start : start + 16384])
            for _ in range(2000):  # then ~30 MB more: a reader that reads it all would wait
                await response.write(filler.encode() * 160)
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    site = Site(2)
    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/", site.page)
    app.router.add_get("/{path:.+}", site.page)
    server = await aiohttp_server(app)
    root = base_url(server)
    config = make_config([root], fetch__max_bytes=100_000)  # robots.txt is not a page
    summary = await crawl(config)
    pages = await stored(config.storage.db)
    assert pages[root + "p/0"] == (None, "robots", "disallowed by robots.txt")
    assert pages[root + "p/1"][:2] == (200, None)
    assert summary.counts.by_error == {"robots": 1}


async def test_the_gate_asks_an_unavailable_robots_txt_again_in_rounds(aiohttp_server, make_config):
    """RobotsGate.settled_rules: a 503 is asked for again `retry` seconds later, up to `rounds`
    times; the rules the server gives once it answers are the host's."""
    from scraper.crawl.fetch import Fetcher
    from scraper.crawl.robots import RobotsGate
    from scraper.urls import host_key, host_of

    answers = [web.Response(status=503), web.Response(status=503), web.Response(text=ROBOTS)]
    served: list[float] = []

    async def robots(request: web.Request) -> web.Response:
        served.append(asyncio.get_running_loop().time())
        return answers[len(served) - 1]

    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    server = await aiohttp_server(app)
    page = base_url(server) + "p/1"
    config = make_config([page], fetch__retries=0)
    async with Fetcher(config.fetch, trusted_hosts=[host_of(page)]) as fetcher:
        gate = RobotsGate(fetcher, "scraper-test", timeout=5, retry=0.2, rounds=3)
        rules = await gate.settled_rules(host_key(page), page)
    assert not rules.unavailable and rules.skip_reason(page) == "disallowed by robots.txt"
    assert len(served) == 3
    assert min(b - a for a, b in itertools.pairwise(served)) >= 0.2
