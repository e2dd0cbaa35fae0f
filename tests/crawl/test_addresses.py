"""fetch.block_private and the crawl's boundary: which addresses and hosts requests may reach.

No test here sends a packet outside 127.0.0.0/8. The address classes are proved on the
classifying function alone (no connection); the refusals at connect time on loopback addresses
that the crawl is told are not its seeds'.
"""

from __future__ import annotations

import socket
from collections import Counter

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from helpers import base_url, crawl, rows
from scraper.crawl.addresses import AddressBlocked, AddressGuard, GuardedResolver, classify


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fd00:ec2::254", "unique-local"),  # AWS's metadata service over IPv6
        ("fc00::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.100.100.200", "non-public"),  # Alibaba Cloud's metadata service (shared space)
        ("100.64.0.1", "non-public"),
        # IPv6 spellings of IPv4 addresses reach the IPv4 address.
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("2002:7f00:1::", "loopback"),  # 6to4
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        # Public: these are only classified, never connected to.
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
    ],
)
def test_address_classes(address: str, kind: str | None) -> None:
    assert classify(address) == kind


def test_the_socket_factory_refuses_before_connecting() -> None:
    guard = AddressGuard(block=True, trusted_hosts=["127.0.0.1"])
    ipv4 = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
    with pytest.raises(AddressBlocked, match=r"127\.0\.0\.2 is a loopback address"):
        guard.socket_factory((*ipv4, ("127.0.0.2", 80)))
    guard.socket_factory((*ipv4, ("127.0.0.1", 80))).close()  # a seed's: a socket, unconnected
    open_guard = AddressGuard(block=False)
    open_guard.socket_factory((*ipv4, ("127.0.0.2", 80))).close()


class Flipping(AbstractResolver):
    """A name server that answers each name from a list, one answer per lookup: DNS
    rebinding, as an attacker's server does it (a harmless address first, then another)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self.answers[host].pop(0)
        return [
            {"hostname": host, "host": address, "port": port, "family": socket.AF_INET,
             "proto": 0, "flags": socket.AI_NUMERICHOST}
        ]  # fmt: skip

    async def close(self) -> None:
        pass


async def test_every_lookup_is_checked_so_rebinding_cannot_slip_past() -> None:
    guard = AddressGuard(block=True, trusted_hosts=["127.0.0.1", "seed.test"])
    flipping = Flipping(
        {"rebind.test": ["127.0.0.1", "127.0.0.3"], "seed.test": ["127.0.0.4", "127.0.0.5"]}
    )
    resolver = GuardedResolver(flipping, guard)
    assert [a["host"] for a in await resolver.resolve("rebind.test", 80)] == ["127.0.0.1"]
    with pytest.raises(AddressBlocked, match=r"rebind\.test resolves to 127\.0\.0\.3 is a loop"):
        await resolver.resolve("rebind.test", 80)
    # A seed's host may be anywhere, and what it resolves to is trusted from then on.
    assert [a["host"] for a in await resolver.resolve("seed.test", 80)] == ["127.0.0.4"]
    assert guard.refusal("127.0.0.4") is None
    assert guard.refusal("127.0.0.5") is not None


def counting_app(hits: Counter[str]) -> web.Application:
    async def any_path(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return web.Response(text="<title>reached</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", any_path)
    return app


@pytest.mark.parametrize("obey_robots", [True, False])
async def test_hosts_on_addresses_that_are_not_the_seeds_are_refused(
    aiohttp_server, make_config, obey_robots
):
    """The seed is on 127.0.0.2 (a private address, allowed: the seed's own). Its page links to
    another server on 127.0.0.1, by name (localhost: the resolver's answer is refused) and by
    address (the connection's address is refused): neither gets a single request."""
    hits: Counter[str] = Counter()
    inside = await aiohttp_server(counting_app(hits), host="127.0.0.1")
    port = inside.port

    async def seed_page(request: web.Request) -> web.Response:
        links = f'<a href="http://localhost:{port}/by-name">x</a>'
        links += f'<a href="http://127.0.0.1:{port}/by-address">y</a><a href="/local">z</a>'
        return web.Response(text=f"<title>seed</title>{links}", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", seed_page)
    app.router.add_get("/local", seed_page)
    seed = await aiohttp_server(app, host="127.0.0.2")
    config = make_config(
        [base_url(seed)], crawl__obey_robots=obey_robots,
        crawl__allowed_domains=["127.0.0.2", "127.0.0.1", "localhost"],
    )  # fmt: skip
    summary = await crawl(config)
    assert summary.status == "finished"
    assert hits == Counter()
    found = dict(
        (url, (kind, error, attempts))
        for url, kind, error, attempts in await rows(
            config.storage.db, "SELECT url, error_kind, error, attempts FROM pages"
        )
    )
    assert found[base_url(seed) + "local"][0] is None  # the seed's host crawls as usual
    for url in (f"http://localhost:{port}/by-name", f"http://127.0.0.1:{port}/by-address"):
        kind, error, attempts = found[url]
        assert (kind, attempts) == ("blocked", 0)
        assert "127.0.0.1 is a loopback address (fetch.block_private)" in error
    assert summary.counts.by_error == {"blocked": 2}


async def test_block_private_off_reaches_them(aiohttp_server, make_config):
    hits: Counter[str] = Counter()
    inside = await aiohttp_server(counting_app(hits), host="127.0.0.1")

    async def seed_page(request: web.Request) -> web.Response:
        link = f'<a href="http://127.0.0.1:{inside.port}/x">x</a>'
        return web.Response(text=link, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", seed_page)
    seed = await aiohttp_server(app, host="127.0.0.2")
    config = make_config(
        [base_url(seed)], crawl__allowed_domains=["127.0.0.2", "127.0.0.1"],
        fetch__block_private=False,
    )  # fmt: skip
    await crawl(config)
    assert hits == Counter({"/robots.txt": 1, "/x": 1})


async def test_sitemaps_stay_within_the_scope(aiohttp_server, make_config):
    """robots.txt, a sitemap index and a redirect each point a sitemap at a denied host (a
    server of this test): it gets no request, and the seed's host is read as usual."""
    outside_hits: Counter[str] = Counter()
    outside = await aiohttp_server(counting_app(outside_hits), host="127.0.0.1")
    elsewhere = f"http://localhost:{outside.port}"
    ns = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
    hits: Counter[str] = Counter()

    async def handler(request: web.Request) -> web.StreamResponse:
        hits[request.path] += 1
        root = f"http://{request.host}"
        if request.path == "/robots.txt":
            text = f"User-agent: *\nSitemap: {elsewhere}/declared.xml\nSitemap: /index.xml\n"
            return web.Response(text=text)
        if request.path == "/index.xml":
            body = "".join(
                f"<sitemap><loc>{url}</loc></sitemap>"
                for url in (f"{elsewhere}/child.xml", f"{root}/moved.xml", f"{root}/ok.xml")
            )
            return web.Response(text=f"<sitemapindex {ns}>{body}</sitemapindex>")
        if request.path == "/moved.xml":
            raise web.HTTPFound(f"{elsewhere}/redirected.xml")
        if request.path == "/ok.xml":
            text = f"<urlset {ns}><url><loc>{root}/listed</loc></url></urlset>"
            return web.Response(text=text, content_type="application/xml")
        return web.Response(text="<title>page</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    config = make_config(
        [base_url(server)], crawl__sitemaps=True, crawl__denied_domains=["localhost"]
    )
    summary = await crawl(config)
    assert summary.status == "finished"
    assert outside_hits == Counter()
    assert hits["/listed"] == 1 and hits["/ok.xml"] == 1
    found = dict(
        await rows(config.storage.db, "SELECT url, error FROM pages WHERE error_kind IS NOT NULL")
    )
    assert found == {
        f"{elsewhere}/declared.xml": f"outside the crawl's scope: localhost:{outside.port} "
        "is in crawl.denied_domains",
        f"{elsewhere}/child.xml": f"outside the crawl's scope: localhost:{outside.port} "
        "is in crawl.denied_domains",
        base_url(server) + "moved.xml": f"redirected to {elsewhere}/redirected.xml: outside "
        f"the crawl's scope: localhost:{outside.port} is in crawl.denied_domains",
    }
    assert summary.counts.by_error == {"out_of_scope": 3}


@pytest.mark.parametrize("where", ["outside", "no host"])
async def test_a_robots_txt_redirecting_outside_the_scope_counts_as_none(
    aiohttp_server, make_config, where
):
    outside_hits: Counter[str] = Counter()
    outside = await aiohttp_server(counting_app(outside_hits), host="127.0.0.1")
    location = {
        "outside": f"http://localhost:{outside.port}/robots.txt",
        "no host": "http://local<host>/robots.txt",
    }[where]

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/robots.txt":
            raise web.HTTPMovedPermanently(location)
        return web.Response(text='<a href="/next">n</a>', content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    config = make_config([base_url(server)])
    summary = await crawl(config)
    assert outside_hits == Counter()
    assert summary.pages == 2 and summary.errors == 0
