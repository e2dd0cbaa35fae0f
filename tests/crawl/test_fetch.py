"""The fetch stage through whole crawls of small purpose-built servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict
from typing import Any

from aiohttp import web

from helpers import base_url, crawl, rows


def html(body: str, **kw: Any) -> web.Response:
    return web.Response(text=f"<html><body>{body}</body></html>", content_type="text/html", **kw)


class Recorder:
    """Counts hits and start times per path, and the most requests seen at once."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = defaultdict(list)
        self.active = 0
        self.most_active = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.hits[request.path].append(time.monotonic())
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            return await handler(request)
        finally:
            self.active -= 1


def app_with(routes: dict[str, Any]) -> tuple[web.Application, Recorder]:
    recorder = Recorder()
    app = web.Application(middlewares=[recorder.middleware])
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    return app, recorder


async def page_row(db: str, url: str) -> dict[str, Any]:
    cols = "status, attempts, error_kind, error, final_url, content_type, title, bytes"
    found = await rows(db, f"SELECT {cols} FROM pages WHERE url = ?", url)
    assert len(found) == 1, f"{url} stored {len(found)} times"
    return dict(zip([c.strip() for c in cols.split(",")], found[0], strict=True))


async def test_503_twice_then_200_is_stored_once_with_three_attempts(aiohttp_server, make_config):
    async def flaky(request: web.Request) -> web.Response:
        if len(recorder.hits["/"]) <= 2:
            return web.Response(status=503)
        return html("<title>ok</title>")

    app, recorder = app_with({"/": flaky})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], fetch__retries=2)
    await crawl(config)
    row = await page_row(config.storage.db, base_url(server))
    assert (row["status"], row["attempts"], row["error_kind"]) == (200, 3, None)
    assert row["title"] == "ok"


async def test_404_is_stored_and_not_retried(aiohttp_server, make_config):
    app, recorder = app_with({})
    server = await aiohttp_server(app)
    url = base_url(server) + "nothing"
    config = make_config([url], fetch__retries=3)
    await crawl(config)
    row = await page_row(config.storage.db, url)
    assert (row["status"], row["attempts"], row["error_kind"]) == (404, 1, "http")
    assert len(recorder.hits["/nothing"]) == 1


async def test_5xx_that_never_recovers_keeps_its_last_error(aiohttp_server, make_config):
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app, recorder = app_with({"/": broken})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], fetch__retries=2)
    summary = await crawl(config)
    row = await page_row(config.storage.db, base_url(server))
    assert (row["status"], row["attempts"], row["error_kind"]) == (500, 3, "http")
    assert "500" in row["error"]
    assert len(recorder.hits["/"]) == 3
    assert summary.by_error == {"http": 1}


async def test_retry_after_is_honoured(aiohttp_server, make_config):
    async def busy(request: web.Request) -> web.Response:
        if len(recorder.hits["/"]) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return html("fine")

    app, recorder = app_with({"/": busy})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)])
    await crawl(config)
    first, second = recorder.hits["/"]
    assert second - first >= 0.95  # the backoff alone would have been ~0.01 s
    assert (await page_row(config.storage.db, base_url(server)))["attempts"] == 2


async def test_retry_after_is_capped(aiohttp_server, make_config):
    async def busy(request: web.Request) -> web.Response:
        if len(recorder.hits["/"]) == 1:
            return web.Response(status=503, headers={"Retry-After": "3600"})
        return html("fine")

    app, recorder = app_with({"/": busy})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], fetch__max_retry_after=0.3)
    await crawl(config)
    first, second = recorder.hits["/"]
    assert 0.25 <= second - first < 5


async def test_dead_port_is_a_connection_error_after_the_retries(make_config):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    config = make_config([url], fetch__retries=2, crawl__obey_robots=False)
    summary = await crawl(config)
    row = await page_row(config.storage.db, url)
    assert (row["status"], row["attempts"], row["error_kind"]) == (None, 3, "connection")
    assert str(port) in row["error"]
    assert summary.pages == 1


async def test_read_timeout_is_recorded(aiohttp_server, make_config):
    async def stalls(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return html("late")

    app, _ = app_with({"/": stalls})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], fetch__read_timeout=0.2, fetch__retries=1)
    await crawl(config)
    row = await page_row(config.storage.db, base_url(server))
    assert (row["status"], row["attempts"], row["error_kind"]) == (None, 2, "timeout")


async def test_oversized_bodies_are_abandoned_and_recorded(aiohttp_server, make_config):
    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(100):
                await response.write(b"<p>" + b"x" * 10_000 + b"</p>")
        except ConnectionResetError:
            pass
        return response

    async def declared(request: web.Request) -> web.Response:
        return html("y" * 300_000)

    async def gzipped(request: web.Request) -> web.Response:
        response = html("z" * 300_000)  # ~300 KB once decompressed, ~1 KB on the wire
        response.enable_compression()
        return response

    async def index(request: web.Request) -> web.Response:
        return html('<a href="/streamed">s</a><a href="/declared">d</a><a href="/gzipped">g</a>')

    app, _ = app_with(
        {"/": index, "/streamed": streamed, "/declared": declared, "/gzipped": gzipped}
    )
    server = await aiohttp_server(app)
    root = base_url(server)
    config = make_config([root], fetch__max_bytes=100_000)
    await crawl(config)
    for path in ("streamed", "declared", "gzipped"):
        row = await page_row(config.storage.db, root + path)
        assert row["error_kind"] == "too_large", path
        assert row["status"] == 200
        assert row["title"] is None
        assert row["bytes"] > 100_000


async def test_non_html_is_recorded_not_parsed(aiohttp_server, make_config):
    async def pdf(request: web.Request) -> web.Response:
        return web.Response(body=b"%PDF-1.4 <a href='/hidden'>", content_type="application/pdf")

    async def index(request: web.Request) -> web.Response:
        return html('<a href="/doc.pdf">pdf</a>')

    app, recorder = app_with({"/": index, "/doc.pdf": pdf})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], crawl__skip_extensions=[])
    await crawl(config)
    row = await page_row(config.storage.db, base_url(server) + "doc.pdf")
    assert row["content_type"] == "application/pdf"
    assert (row["status"], row["error_kind"], row["title"]) == (200, None, None)
    links = await rows(config.storage.db, "SELECT * FROM links WHERE from_url LIKE '%doc.pdf'")
    assert links == []
    assert "/hidden" not in recorder.hits


async def test_every_redirect_hop_is_a_row_and_shared_targets_are_stored_once(
    aiohttp_server, make_config
):
    async def index(request: web.Request) -> web.Response:
        return html('<a href="/first">1</a><a href="/other">2</a><a href="/away">3</a>')

    async def first(request: web.Request) -> web.Response:
        raise web.HTTPFound("/second")

    async def second(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/final#part")

    async def other(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/final")

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://offsite.invalid/")

    async def final(request: web.Request) -> web.Response:
        return html("<title>Final</title>")

    routes = {"/": index, "/first": first, "/second": second, "/other": other, "/away": away,
              "/final": final}  # fmt: skip
    app, recorder = app_with(routes)
    server = await aiohttp_server(app)
    root = base_url(server)
    config = make_config([root], crawl__obey_robots=False)
    await crawl(config)
    for url, status, target in [
        ("first", 302, "second"), ("second", 301, "final"), ("other", 307, "final"),
    ]:  # fmt: skip
        row = await page_row(config.storage.db, root + url)
        assert (row["status"], row["final_url"], row["title"]) == (status, root + target, None)
    assert (await page_row(config.storage.db, root + "final"))["title"] == "Final"
    assert len(recorder.hits["/final"]) == 1  # two ways in, fetched and stored once
    away_row = await page_row(config.storage.db, root + "away")
    assert (away_row["final_url"], away_row["error_kind"]) == ("http://offsite.invalid/", None)
    assert await rows(config.storage.db, "SELECT 1 FROM pages WHERE url LIKE '%offsite%'") == []


async def test_redirect_loops_stop_and_are_recorded(aiohttp_server, make_config):
    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def endless(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/r/{int(request.match_info['n']) + 1}")

    app, recorder = app_with({"/loop": loop, "/r/{n}": endless})
    server = await aiohttp_server(app)
    root = base_url(server)
    config = make_config([root + "loop", root + "r/0"], fetch__max_redirects=4)
    await crawl(config)
    row = await page_row(config.storage.db, root + "loop")
    assert (row["error_kind"], row["error"]) == (
        "redirects",
        "redirects to itself (fetch.max_redirects = 4)",
    )
    assert len(recorder.hits["/loop"]) == 1
    assert sorted(recorder.hits) == ["/loop", "/r/0", "/r/1", "/r/2", "/r/3", "/r/4", "/robots.txt"]
    last = await page_row(config.storage.db, root + "r/4")
    assert last["error_kind"] == "redirects"  # the fifth hop is one too many


async def test_concurrency_cap_is_never_exceeded(aiohttp_server, make_config):
    async def index(request: web.Request) -> web.Response:
        return html("".join(f'<a href="/p/{i}">{i}</a>' for i in range(40)))

    async def page(request: web.Request) -> web.Response:
        await asyncio.sleep(0.03)
        return html("page")

    app, recorder = app_with({"/": index, "/p/{i}": page})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], fetch__concurrency=3)
    summary = await crawl(config)
    assert summary.pages == 41
    assert recorder.most_active == 3


async def test_a_request_in_backoff_holds_no_slot(aiohttp_server, make_config):
    """With one slot, the other pages are fetched while the failing one waits out Retry-After."""

    async def index(request: web.Request) -> web.Response:
        links = "".join(f'<a href="/p/{i}">{i}</a>' for i in range(5))
        return html('<a href="/busy">busy</a>' + links)

    async def busy(request: web.Request) -> web.Response:
        if len(recorder.hits["/busy"]) == 1:
            return web.Response(status=503, headers={"Retry-After": "1"})
        return html("done")

    async def page(request: web.Request) -> web.Response:
        return html("page")

    app, recorder = app_with({"/": index, "/busy": busy, "/p/{i}": page})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], fetch__concurrency=1)
    await crawl(config)
    first_busy, second_busy = recorder.hits["/busy"]
    others = [t for path, times in recorder.hits.items() if path.startswith("/p/") for t in times]
    assert len(others) == 5
    assert all(first_busy < t < second_busy for t in others)


async def test_max_redirects_zero_stores_the_redirect_itself(aiohttp_server, make_config):
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    app, recorder = app_with({"/": moved})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], fetch__max_redirects=0)
    await crawl(config)
    row = await page_row(config.storage.db, base_url(server))
    assert (row["status"], row["error_kind"]) == (302, None)
    assert "/elsewhere" not in recorder.hits


async def test_latency_does_not_count_the_wait_for_a_slot(aiohttp_server, make_config):
    async def index(request: web.Request) -> web.Response:
        return html("".join(f'<a href="/p/{i}">{i}</a>' for i in range(4)))

    async def page(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return html("page")

    app, _ = app_with({"/": index, "/p/{i}": page})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], fetch__concurrency=1, crawl__obey_robots=False)
    await crawl(config)
    # With one slot the pages queue for it; each one's own request still takes ~200 ms.
    times = [
        t
        for (t,) in await rows(
            config.storage.db, "SELECT elapsed_ms FROM pages WHERE url LIKE '%/p/%'"
        )
    ]
    assert len(times) == 4
    assert all(190 <= t < 350 for t in times), times


async def test_a_name_that_does_not_resolve_is_a_dns_error(make_config):
    """Its own error kind, not a connection error; and not asked again (it will not resolve in a
    second either)."""
    from scraper.crawl.dns import StaticResolver
    from scraper.crawl.fetch import Fetcher
    from scraper.models import CrawlRequest

    config = make_config(["http://nowhere.test/"])
    async with Fetcher(config.fetch, resolver=StaticResolver({}, None)) as fetcher:
        result = await fetcher.fetch(CrawlRequest("http://nowhere.test/"))
    assert (result.error_kind, result.attempts) == ("dns", 1)
    assert result.error == "cannot resolve nowhere.test: nowhere.test: Name or service not known"
