"""The session and what each request carries, seen by an aiohttp server on 127.0.0.1."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from scraper.config import FetchConfig
from scraper.crawl.dns import StaticResolver
from scraper.crawl.session import make_session, request_options
from scraper.models import CrawlRequest


async def test_requests_carry_the_user_agent_validators_and_connection_close(aiohttp_server):
    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        raise web.HTTPFound("/elsewhere")

    app = web.Application()
    app.router.add_get("/", echo)
    server = await aiohttp_server(app)
    config = FetchConfig(user_agent="test-agent/1")
    url = str(server.make_url("/"))
    async with make_session(config, 4, StaticResolver({}, None)) as session:
        plain = request_options(CrawlRequest(url), close=False, time_limit=None, connect_timeout=1)
        async with session.get(url, **plain) as response:
            assert response.status == 302  # not followed
        stored = CrawlRequest(url, etag='"v1"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
        conditional = request_options(stored, close=True, time_limit=None, connect_timeout=1)
        async with session.get(url, **conditional) as response:
            assert response.status == 302
    assert seen[0]["User-Agent"] == "test-agent/1"
    assert "If-None-Match" not in seen[0] and seen[0].get("Connection") != "close"
    assert seen[1]["If-None-Match"] == '"v1"'
    assert seen[1]["If-Modified-Since"] == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert seen[1]["Connection"] == "close"


def test_a_time_limit_is_a_total_timeout_and_none_keeps_the_sessions() -> None:
    request = CrawlRequest("http://127.0.0.1/")
    assert "timeout" not in request_options(
        request, close=False, time_limit=None, connect_timeout=1
    )
    limited = request_options(request, close=False, time_limit=5.0, connect_timeout=2.0)
    assert limited["timeout"] == aiohttp.ClientTimeout(total=5.0, connect=2.0)
    assert limited["allow_redirects"] is False and limited["headers"] is None


async def test_the_pool_holds_no_more_connections_than_the_slots() -> None:
    async with make_session(FetchConfig(), 3, StaticResolver({}, None)) as session:
        connector = session.connector
        assert isinstance(connector, aiohttp.TCPConnector)
        assert (connector.limit, connector.limit_per_host) == (3, 0)
