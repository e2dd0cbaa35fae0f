"""Sessions (fetch.sessions): a host that says "blocked" gets a new session (fresh cookies, the
next proxy) and the request is tried again within fetch.retries; a 429 never retires one."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from proxyserver import ForwardProxy, tinyproxy

from helpers import base_url, rows
from scraper.crawl.crawler import Crawler
from scraper.crawl.credentials import read_credentials


@pytest.fixture
def second_proxy(tmp_path: Path) -> Iterator[ForwardProxy]:
    with tinyproxy(tmp_path, "second") as proxy:
        yield proxy


def page(links: list[str] = ()) -> web.Response:  # type: ignore[assignment]
    body = "".join(f'<a href="{link}">x</a>' for link in links)
    return web.Response(text=f"<title>t</title>{body}", content_type="text/html")


async def crawl(config: object) -> None:
    await Crawler(config, credentials=read_credentials(config, environ={})).run()  # type: ignore[arg-type]


async def stored(db: str) -> dict[str, tuple[int, int]]:
    found = await rows(db, "SELECT url, status, attempts FROM pages")
    return {url.split("/", 3)[3]: (status, attempts) for url, status, attempts in found}


async def counters(db: str) -> dict[str, object]:
    ((text,),) = await rows(db, "SELECT counters FROM crawls")
    return json.loads(text)


async def test_a_blocked_session_is_retired_and_the_request_goes_on_with_fresh_cookies(
    aiohttp_server, make_config
):
    """Each visitor without a cookie gets a new session id; session 1 is banned (403)."""
    numbers = itertools.count(1)
    sent: list[tuple[str, str | None]] = []

    async def any_path(request: web.Request) -> web.Response:
        sid = request.cookies.get("sid")
        sent.append((request.path, sid))
        if sid == "1":
            return web.Response(status=403, text="blocked")
        response = page(["/a", "/b"] if request.path == "/" else [])
        if sid is None:
            response.set_cookie("sid", str(next(numbers)))
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", any_path)
    site = await aiohttp_server(app)
    config = make_config(
        [base_url(site)], fetch__sessions=True, crawl__obey_robots=False,
        fetch__concurrency=1, fetch__per_host_concurrency=1,
    )  # fmt: skip
    await crawl(config)
    got = await stored(config.storage.db)
    assert got[""] == (200, 1)
    # /a met the banned session, retired it, and came back with a new one; /b kept it.
    assert got["a"] == (200, 2) and got["b"] == (200, 1)
    assert sent[1:] == [("/a", "1"), ("/a", None), ("/b", "2")]
    sessions = (await counters(config.storage.db))["sessions"]
    assert sessions["retired"] == 1  # type: ignore[index]


async def test_without_sessions_a_403_is_the_answer(aiohttp_server, make_config):
    async def any_path(request: web.Request) -> web.Response:
        return web.Response(status=403, text="no")

    app = web.Application()
    app.router.add_get("/{tail:.*}", any_path)
    site = await aiohttp_server(app)
    config = make_config([base_url(site)], crawl__obey_robots=False)
    await crawl(config)
    assert await stored(config.storage.db) == {"": (403, 1)}
    assert "sessions" not in await counters(config.storage.db)


async def test_a_new_session_goes_through_the_next_proxy(
    aiohttp_server, make_config, good_proxy, second_proxy
):
    """The site bans the first proxy it sees (an address it blocks); the session retired on
    that 403 moves the host to the other proxy."""
    by_proxy: Counter[str] = Counter()
    banned: list[str] = []

    async def any_path(request: web.Request) -> web.Response:
        proxy = request.headers.get("X-Proxied", "none")
        by_proxy[proxy] += 1
        if not banned:
            banned.append(proxy)
        if proxy == banned[0]:
            return web.Response(status=403, text="your address is blocked")
        return page(["/a"] if request.path == "/" else [])

    app = web.Application()
    app.router.add_get("/{tail:.*}", any_path)
    site = await aiohttp_server(app)
    config = make_config(
        [base_url(site)], crawl__obey_robots=False, fetch__sessions=True,
        fetch__proxies=[good_proxy.url, second_proxy.url], fetch__proxy_strategy="per_host",
    )  # fmt: skip
    await crawl(config)
    got = await stored(config.storage.db)
    assert got == {"": (200, 2), "a": (200, 1)}
    assert by_proxy[banned[0]] == 1 and sum(by_proxy.values()) == 3


async def test_a_429_slows_the_host_and_retires_no_session(aiohttp_server, make_config):
    hits: Counter[str] = Counter()

    async def any_path(request: web.Request) -> web.Response:
        hits[request.path] += 1
        if hits[request.path] == 1:
            return web.Response(status=429, headers={"Retry-After": "0"})
        return page()

    app = web.Application()
    app.router.add_get("/{tail:.*}", any_path)
    site = await aiohttp_server(app)
    config = make_config([base_url(site)], fetch__sessions=True, crawl__obey_robots=False)
    await crawl(config)
    assert await stored(config.storage.db) == {"": (200, 2)}
    assert (await counters(config.storage.db))["sessions"] == {"retired": 0, "hosts": {}}
