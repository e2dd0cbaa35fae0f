"""Which URLs a crawl follows: canonical forms once, query policy, scope rules, hostile URLs."""

from __future__ import annotations

from collections import Counter

import pytest
from aiohttp import web

from helpers import BACKTRACKING, base_url, crawl, rows
from scraper.urls import UrlPolicy, canonicalize


def link_site(hrefs: list[str]) -> tuple[web.Application, Counter[str]]:
    """/ links to `hrefs`; every other path answers a small page. Counts hits by path and query."""
    hits: Counter[str] = Counter()

    async def index(request: web.Request) -> web.Response:
        links = "".join(f'<a href="{h}">x</a>' for h in hrefs)
        return web.Response(text=f"<title>home</title>{links}", content_type="text/html")

    async def page(request: web.Request) -> web.Response:
        hits[request.raw_path] += 1
        return web.Response(text=f"<title>{request.path}</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/{tail:.+}", page)
    return app, hits


async def test_spellings_of_one_url_are_fetched_once(aiohttp_server, make_config):
    server = await aiohttp_server(web.Application())  # only to learn a free port's spelling
    port = server.port
    await server.close()
    hrefs = [
        "/a?x=1&y=2", f"http://127.0.0.1:{port}/a?x=1&y=2", f"HTTP://127.0.0.1:{port}/a?x=1&y=2",
        "/a?x=1&y=2#frag", "/a?y=2&x=1", "/%61?x=1&y=2", "/./b/../a?x=1&y=2",
        "/a?x=1&y=2&utm_source=mail", "/a?fbclid=123&x=1&y=2",
    ]  # fmt: skip
    app, hits = link_site(hrefs)
    server = await aiohttp_server(app, port=port)
    await crawl(make_config([base_url(server)], crawl__obey_robots=False, crawl__query="sort"))
    assert dict(hits) == {"/a?x=1&y=2": 1}


async def test_parameter_order_is_kept_by_default(aiohttp_server, make_config):
    app, hits = link_site(["/a?x=1&y=2", "/a?y=2&x=1"])
    server = await aiohttp_server(app)
    await crawl(make_config([base_url(server)], crawl__obey_robots=False))
    assert dict(hits) == {"/a?x=1&y=2": 1, "/a?y=2&x=1": 1}


async def test_links_are_requested_as_a_browser_would(aiohttp_server, make_config):
    """A backslash is a slash; with crawl.drop_params (the default) a query loses the parameters
    named and nothing else: "?b" is requested as "?b" (before: "?b="), "? d" as "?%20d" (before:
    "?+d+="), and a link that differs by a dropped parameter alone is the same page."""
    app, hits = link_site(["\\back\\slash", "/q?b", "/q? d", "/q?b&utm_source=mail", "/q?a=1&&b"])
    server = await aiohttp_server(app)
    await crawl(make_config([base_url(server)], crawl__obey_robots=False))
    assert dict(hits) == {"/back/slash": 1, "/q?b": 1, "/q?%20d": 1, "/q?a=1&&b": 1}


def test_query_policies() -> None:
    url = "http://example.com/p?b=2&utm_medium=x&a=1"
    assert canonicalize(url) == "http://example.com/p?b=2&utm_medium=x&a=1"
    assert canonicalize(url, policy=UrlPolicy(drop_params=("utm_*",))) == (
        "http://example.com/p?b=2&a=1"
    )
    assert canonicalize(url, policy=UrlPolicy(query="sort")) == (
        "http://example.com/p?a=1&b=2&utm_medium=x"
    )
    assert canonicalize(url, policy=UrlPolicy(query="drop")) == "http://example.com/p"


async def test_scope_rules(aiohttp_server, make_config):
    app, hits = link_site(
        ["/blog/1", "/blog/2?print=1", "/shop/1", "/img/cat.JPG", "/files/a.zip", "/docs/a.pdf",
         "/blog/photo.png?size=2", "/about"]
    )  # fmt: skip
    server = await aiohttp_server(app)
    config = make_config(
        [base_url(server)], crawl__obey_robots=False, crawl__include=["/blog/", "/about$"],
        crawl__exclude=[r"print=1"],
    )  # fmt: skip
    await crawl(config)
    assert sorted(hits) == ["/about", "/blog/1"]
    stored = {url for (url,) in await rows(config.storage.db, "SELECT to_url FROM links")}
    assert len(stored) == 8  # every link is kept in the links table, followed or not


async def test_denied_domains_and_subdomains(aiohttp_server, make_config):
    hits: Counter[str] = Counter()

    async def page(request: web.Request) -> web.Response:
        hits[request.host.split(":")[0]] += 1
        links = "".join(
            f'<a href="http://{h}:{request.url.port}/">{h}</a>' for h in ("127.0.0.2", "localhost")
        )
        return web.Response(text=links, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    server = await aiohttp_server(app, host="0.0.0.0")
    port = server.port
    config = make_config(
        [f"http://127.0.0.1:{port}/"], crawl__obey_robots=False,
        crawl__allowed_domains=["127.0.0.1", "127.0.0.2", "localhost"],
        crawl__denied_domains=["localhost"], fetch__block_private=False,
    )  # fmt: skip
    await crawl(config)
    assert dict(hits) == {"127.0.0.1": 1, "127.0.0.2": 1}


def test_subdomains_can_be_excluded(make_config) -> None:
    config = make_config(["http://example.com/"], crawl__include_subdomains=False)
    scope = config.crawl.scope()
    assert scope.allows("http://example.com/x")
    assert not scope.allows("http://www.example.com/x")
    wide = make_config(["http://example.com/"]).crawl.scope()
    assert wide.allows("http://www.example.com/x")


@pytest.mark.parametrize(
    "href",
    [
        "/with space/page", "/ünïcödé/päth", "http://bücher.invalid/x", "/%zz%", "http://[::1",
        "http://:80/", "javascript:alert(1)", "/" + "a" * 5000, "//", "http://127.0.0.1:99999/",
    ],
)  # fmt: skip
async def test_hostile_urls_do_not_crash_the_crawl(aiohttp_server, make_config, href):
    app, _ = link_site([href, "/fine"])
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], crawl__obey_robots=False)
    summary = await crawl(config)
    assert summary.status == "finished"
    urls = {u for (u,) in await rows(config.storage.db, "SELECT url FROM pages")}
    assert base_url(server) + "fine" in urls


async def test_numeric_spellings_of_a_denied_address_are_denied(aiohttp_server, make_config):
    """ "127.1", "2130706433", "0x7f.1" are all 127.0.0.1 to the resolver: the deny rule sees
    that too. (Before, "2130706433" was a host of its own, allowed by the rule naming it.)"""
    hits: Counter[str] = Counter()

    async def page(request: web.Request) -> web.Response:
        hits[request.path] += 1
        port = request.url.port
        spellings = ("127.1", "2130706433", "0x7f.1", "0177.0.0.1", "127.0.0.1.")
        links = "".join(f'<a href="http://{h}:{port}/secret">x</a>' for h in spellings)
        return web.Response(text=links, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    server = await aiohttp_server(app)
    config = make_config(
        [f"http://localhost:{server.port}/"], crawl__obey_robots=False,
        crawl__allowed_domains=["localhost", "2130706433"], crawl__denied_domains=["127.0.0.1"],
    )  # fmt: skip
    await crawl(config)
    assert dict(hits) == {"/": 1}
    links = await rows(config.storage.db, "SELECT to_url FROM links")
    assert links == [(f"http://127.0.0.1:{server.port}/secret",)]
    assert await rows(config.storage.db, "SELECT count(*) FROM pages") == [(1,)]


async def test_credentials_in_links_are_never_sent_nor_kept(aiohttp_server, make_config):
    seen: list[str | None] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        port = request.url.port
        href = f"http://admin:hunter2@127.0.0.1:{port}/private"
        return web.Response(text=f'<a href="{href}">x</a>', content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    server = await aiohttp_server(app)
    seed = f"http://admin:hunter2@127.0.0.1:{server.port}/"
    config = make_config([seed], crawl__obey_robots=False)
    assert config.crawl.seeds == (base_url(server),)
    summary = await crawl(config)
    assert seen == [None, None]  # the seed and /private, both without the credentials
    dump = await rows(config.storage.db, "SELECT * FROM pages")
    dump += await rows(config.storage.db, "SELECT * FROM crawls")
    dump += await rows(config.storage.db, "SELECT * FROM frontier")
    assert "hunter2" not in str(dump) and "admin" not in str(dump)
    assert summary.pages == 2


async def test_scope_regexes_never_run_on_the_event_loop(aiohttp_server, make_config):
    """crawl.exclude with a backtracking pattern, and a redirect to a URL it spins on for years:
    deciding whether to follow the redirect costs a parse worker (parse.timeout), not the event
    loop, which goes on crawling (before, it froze there, deaf to Ctrl-C)."""
    evil = "/" + "a" * 60 + "b"
    hits: Counter[str] = Counter()

    async def handler(request: web.Request) -> web.StreamResponse:
        hits[request.path] += 1
        if request.path == "/go":
            raise web.HTTPFound(evil)
        links = '<a href="/go">go</a><a href="/fine">fine</a>'
        return web.Response(text=f"<title>t</title>{links}", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    config = make_config(
        [base_url(server)], crawl__obey_robots=False, crawl__exclude=[BACKTRACKING],
        parse__timeout=1.0,
    )  # fmt: skip
    summary = await crawl(config)
    assert summary.status == "finished"
    assert hits == Counter({"/": 1, "/go": 1, "/fine": 1})
    found = dict(await rows(config.storage.db, "SELECT url, error FROM pages"))
    assert found[base_url(server) + "go"] == (
        "deciding whether to follow it took over parse.timeout (1 s of CPU); its worker was ended"
    )
    assert found[base_url(server) + "fine"] is None


async def test_a_flood_of_links_is_cut_and_counted(aiohttp_server, make_config):
    """A page of 100,000 links (and some of 3,000 characters): the first
    crawl.max_links_per_page are kept and followed, URLs over crawl.max_url_length nowhere, and
    the page's row counts what it lost."""
    long_hrefs = "".join(f'<a href="/long/{i}/{"x" * 3000}">l</a>' for i in range(10))
    flood = "".join(f'<a href="/p/{i}">{i}</a>' for i in range(100_000))

    async def handler(request: web.Request) -> web.Response:
        body = f"<title>t</title>{long_hrefs}{flood}" if request.path == "/" else "<title>t</title>"
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    config = make_config(
        [base_url(server)], crawl__obey_robots=False, crawl__max_links_per_page=300,
        crawl__max_pages=20,
    )  # fmt: skip
    summary = await crawl(config)
    assert summary.status == "finished"
    db = config.storage.db
    ((cut, links),) = await rows(
        db, "SELECT links_cut, json_array_length(links) FROM pages WHERE url = ?", base_url(server)
    )
    assert (cut, links) == (100_010 - 300, 300)
    assert await rows(db, "SELECT count(*) FROM frontier") == [(301,)]  # the seed and its 300
    assert await rows(db, "SELECT max(length(to_url)) < 2083 FROM links") == [(1,)]
    others = await rows(db, "SELECT DISTINCT links_cut FROM pages WHERE url <> ?", base_url(server))
    assert others == [(0,)]


async def test_host_names_with_control_characters_are_no_links(aiohttp_server, make_config):
    """A link's host with an escape sequence, a bell or <>" is no host name: not a link, not a
    frontier row, so never shown (as a host of the summary, say) nor requested."""
    hosts = ["a\x1b]0;pwned\x07b.test", "a<b>.test", "a&quot;b.test", "a\x1b[2Jb.test"]
    app, hits = link_site([f"http://{host}/x" for host in hosts] + ["/fine"])
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], crawl__obey_robots=False)
    await crawl(config)
    links = await rows(config.storage.db, "SELECT to_url FROM links")
    assert links == [(base_url(server) + "fine",)]
    hosts_seen = await rows(config.storage.db, "SELECT DISTINCT host FROM frontier")
    assert hosts_seen == [(f"127.0.0.1:{server.port}",)]
    assert dict(hits) == {"/fine": 1}
