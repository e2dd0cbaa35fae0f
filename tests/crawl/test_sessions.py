"""Crawls of a site that wants a session (tests/sessions_site.py): an API header, Basic auth
under one path, a cookie from the home page; a redirect to a second host that must receive
none of it."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sessions_site import API_KEY, COOKIE, PASSWORD, USER, Visits, second_host, session_site

from helpers import base_url, rows
from scraper.crawl.crawler import Crawler
from scraper.crawl.credentials import read_credentials

ENV = {"TEST_API_KEY": API_KEY, "TEST_PASSWORD": PASSWORD}


async def two_hosts(aiohttp_server: Any) -> tuple[Visits, Visits, str, str]:
    """The session site on 127.0.0.1, its redirect's target on 127.0.0.2."""
    first, second = Visits(), Visits()
    other = await aiohttp_server(second_host(second), host="127.0.0.2")
    other_origin = base_url(other).rstrip("/")
    site = await aiohttp_server(session_site(first, other_origin), host="127.0.0.1")
    return first, second, base_url(site), other_origin


def session_config(make_config: Any, seed: str, other: str, **values: Any) -> Any:
    host = seed.split("//")[1].rstrip("/")
    return make_config(
        [seed],
        crawl__allowed_domains=["127.0.0.1", "127.0.0.2"],
        fetch__block_private=False,  # the second host is no seed
        fetch__rules=[{"url": f"{seed}api/*", "headers": {"X-Api-Key": {"env": "TEST_API_KEY"}}}],
        auth=[{"host": host, "user": USER, "password_env": "TEST_PASSWORD"}],
        **values,
    )


async def statuses(db: str) -> dict[str, int]:
    found = await rows(db, "SELECT url, status FROM pages")
    return {url.split("/", 3)[3]: status for url, status in found}


async def test_the_api_header_the_login_and_the_cookie_open_their_pages(
    aiohttp_server, make_config
):
    first, second, seed, other = await two_hosts(aiohttp_server)
    config = session_config(make_config, seed, other)
    credentials = read_credentials(config, environ=ENV)
    summary = await Crawler(config, credentials=credentials).run()
    assert summary.status == "finished"
    got = await statuses(config.storage.db)
    assert got["api/data"] == got["api/more"] == 200
    assert got["private/"] == got["private/page"] == 200
    assert got["members/"] == 200
    assert got["go-away"] == 302 and got["landing"] == 200
    # Only the API's URLs got the key; the login went to its host only.
    assert all(h.get("X-Api-Key") == API_KEY for h in first.headers_of("/api/data"))
    assert all("X-Api-Key" not in h for h in first.headers_of("/plain"))
    assert first.headers_of("/members/")[0]["Cookie"] == f"sid={COOKIE}"
    (landing,) = second.headers_of("/landing")
    assert not {"Authorization", "X-Api-Key", "Cookie"} & set(landing)


async def test_without_the_session_those_pages_are_refused(aiohttp_server, make_config):
    """The control: the same crawl with no key, no login and no cookies."""
    _, _, seed, _ = await two_hosts(aiohttp_server)
    config = make_config(
        [seed],
        crawl__allowed_domains=["127.0.0.1", "127.0.0.2"],
        fetch__block_private=False,
        fetch__cookies=False,
    )
    await Crawler(config).run()
    got = await statuses(config.storage.db)
    assert (got["api/data"], got["private/"], got["members/"]) == (403, 401, 403)


def digest_site(user: str, password: str, seen: list[str]) -> Any:
    """Pages under Digest auth (RFC 7616, MD5, qop=auth), checked as a server does."""
    from aiohttp import web

    realm, nonce = "r", "n0nce"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    async def any_path(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        seen.append(header.split(" ")[0] if header else "-")
        fields = dict(re.findall(r'(\w+)="?([^",]*)"?', header.removeprefix("Digest ")))
        if header.startswith("Digest ") and fields.get("username") == user:
            ha1 = md5(f"{user}:{realm}:{password}")
            ha2 = md5(f"{request.method}:{fields['uri']}")
            expected = md5(f"{ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
            if fields.get("response") == expected:
                body = '<title>in</title><a href="/second">x</a>'
                return web.Response(text=body, content_type="text/html")
        challenge = f'Digest realm="{realm}", nonce="{nonce}", qop="auth", algorithm=MD5'
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    app = web.Application()
    app.router.add_get("/{tail:.*}", any_path)
    return app


async def test_a_digest_login_answers_the_challenge(aiohttp_server, make_config):
    seen: list[str] = []
    server = await aiohttp_server(digest_site(USER, PASSWORD, seen), host="127.0.0.1")
    host = f"127.0.0.1:{server.port}"
    config = make_config(
        [base_url(server)],
        crawl__obey_robots=False,
        auth=[{"host": host, "user": USER, "password_env": "P", "scheme": "digest"}],
    )
    credentials = read_credentials(config, environ={"P": PASSWORD})
    await Crawler(config, credentials=credentials).run()
    got = await statuses(config.storage.db)
    assert got == {"": 200, "second": 200}
    assert seen[0] == "-" and seen[1] == "Digest"  # asked first, then answered
    assert "Basic" not in seen
