"""PoliteFetch: a request of robots.txt or a sitemap takes its turn on its host's slot before it
goes out, holds it while on the wire, and its outcome tunes the slot. Against a real server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from helpers import base_url
from scraper.crawl.fetch import Fetcher
from scraper.crawl.polite import PoliteFetch
from scraper.models import CrawlRequest, FetchResult
from scraper.urls import host_of


class Turns:
    """Grants every turn at once, and writes down what happened in which order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @contextlib.asynccontextmanager
    async def turn(self, url: str) -> AsyncIterator[None]:
        self.events.append(f"turn {url}")
        try:
            yield
        finally:
            self.events.append(f"done {url}")

    def observe(self, url: str, result: FetchResult) -> None:
        self.events.append(f"observed {result.status}")


async def test_a_request_goes_out_within_its_turn_and_its_outcome_is_observed(
    aiohttp_server, make_config
):
    served: list[str] = []

    async def robots(request: web.Request) -> web.Response:
        served.append(f"served {request.path}")
        turns.events.append(served[-1])
        return web.Response(status=429, text="slow down")

    app = web.Application()
    app.router.add_get("/robots.txt", robots)
    server = await aiohttp_server(app)
    url = base_url(server) + "robots.txt"
    turns = Turns()
    config = make_config([url])
    async with Fetcher(config.fetch, trusted_hosts=[host_of(url)]) as fetcher:
        result = await PoliteFetch(fetcher, turns).fetch(CrawlRequest(url), any_type=True)
    assert result.status == 429
    assert turns.events[0] == f"turn {url}"
    assert turns.events[-2:] == ["observed 429", f"done {url}"]
    assert "served /robots.txt" in turns.events[1:-2]  # on the wire within the turn
