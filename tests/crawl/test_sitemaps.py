"""Reading sitemaps in a crawl: from robots.txt or /sitemap.xml, indexes, gzip, broken ones."""

from __future__ import annotations

import gzip

import pytest
from aiohttp import web

from helpers import base_url, crawl, rows
from scraper.urls import KEEP_QUERY, Scope

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(urls: list[str]) -> bytes:
    body = "".join(f"<url><loc>{u}</loc><lastmod>2026-01-01</lastmod></url>" for u in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{body}</urlset>'.encode()


def index(urls: list[str]) -> bytes:
    body = "".join(f"<sitemap><loc>{u}</loc></sitemap>" for u in urls)
    return f"<sitemapindex {NS}>{body}</sitemapindex>".encode()


def site(files: dict[str, bytes], robots: str | None = None) -> tuple[web.Application, list[str]]:
    """Serves `files` as they are; any other path is a small HTML page with no links."""
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/robots.txt" and robots is not None:
            return web.Response(text=robots)
        if request.path in files:
            return web.Response(body=files[request.path], content_type="application/xml")
        if request.path in ("/robots.txt", "/sitemap.xml") or request.path.endswith(".xml"):
            raise web.HTTPNotFound()
        return web.Response(text=f"<title>{request.path}</title>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return app, hits


@pytest.mark.parametrize("workers", [1, 0])  # 0: parsed on the loop, no pool
async def test_a_sitemap_index_with_a_gzipped_child(aiohttp_server, make_config, workers):
    files: dict[str, bytes] = {}
    app, hits = site(files, robots="User-agent: *\nSitemap: /sm/index.xml\n")
    server = await aiohttp_server(app)
    root = base_url(server)
    files["/sm/index.xml"] = index([root + "sm/a.xml", root + "sm/b.xml.gz"])
    files["/sm/a.xml"] = urlset([root + "only-in-a", root + "shared"])
    files["/sm/b.xml.gz"] = gzip.compress(urlset([root + "only-in-b", root + "shared",
                                                  "http://elsewhere.invalid/x"]))  # fmt: skip
    config = make_config([root], crawl__sitemaps=True, parse__workers=workers)
    summary = await crawl(config)
    pages = dict(await rows(config.storage.db, "SELECT url, error_kind FROM pages"))
    for path in ("only-in-a", "only-in-b", "shared", "sm/index.xml", "sm/a.xml", "sm/b.xml.gz"):
        assert root + path in pages
    assert hits.count("/shared") == 1
    assert "elsewhere" not in str(pages)  # out of scope
    assert summary.status == "finished"


async def test_sitemap_xml_is_found_without_robots_txt(aiohttp_server, make_config):
    files: dict[str, bytes] = {}
    app, hits = site(files)
    server = await aiohttp_server(app)
    root = base_url(server)
    files["/sitemap.xml"] = urlset([root + "listed"])
    config = make_config([root], crawl__sitemaps=True, crawl__obey_robots=False)
    await crawl(config)
    assert "/listed" in hits
    assert "/robots.txt" not in hits


async def test_no_sitemap_leaves_no_trace(aiohttp_server, make_config):
    app, _ = site({})
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], crawl__sitemaps=True)
    summary = await crawl(config)
    assert summary.pages == 1  # the seed; the missing /sitemap.xml is not a page of the crawl


async def test_a_sitemap_of_invalid_xml_is_recorded(aiohttp_server, make_config):
    files: dict[str, bytes] = {}
    app, _ = site(files)
    server = await aiohttp_server(app)
    root = base_url(server)
    files["/sitemap.xml"] = urlset([root + "before-the-break"])[:-20] + b"<<<not xml"
    config = make_config([root], crawl__sitemaps=True)
    summary = await crawl(config)
    ((kind, error),) = await rows(
        config.storage.db, "SELECT error_kind, error FROM pages WHERE url LIKE '%sitemap.xml'"
    )
    assert kind == "sitemap" and error.startswith("invalid XML")
    assert summary.status == "finished"


async def test_a_sitemap_with_100000_urls(aiohttp_server, make_config):
    files: dict[str, bytes] = {}
    app, _ = site(files)
    server = await aiohttp_server(app)
    root = base_url(server)
    files["/sitemap.xml"] = urlset([f"{root}item/{i}" for i in range(100_000)])
    config = make_config([root], crawl__sitemaps=True, crawl__max_pages=30)
    summary = await crawl(config)
    assert summary.status == "finished"
    ((discovered,),) = await rows(config.storage.db, "SELECT count(*) FROM frontier")
    assert discovered == 100_001  # the seed and every listed URL, on disk not in memory


async def test_a_parse_worker_dying_on_a_sitemap_is_recorded(aiohttp_server, make_config):
    """The sitemap's row keeps the error, a new worker takes over, and the crawl goes on."""
    import os

    from scraper.config import FetchConfig
    from scraper.crawl.fetch import Fetcher
    from scraper.crawl.sitemaps import SitemapReader
    from scraper.parse.procpool import ProcessPool

    app, _ = site({"/sitemap.xml": urlset(["http://elsewhere.example/a"])})
    server = await aiohttp_server(app)
    records = []

    async def emit(record) -> None:
        records.append(record)

    fetcher = Fetcher(FetchConfig(), trusted_hosts=["127.0.0.1"])  # the server's own address
    async with fetcher, ProcessPool(1) as pool:
        reader = SitemapReader(
            fetcher,
            lambda job: pool.run(os._exit, 9),  # stands for a crash while parsing the sitemap
            emit,
            scope=Scope(),
            policy=KEEP_QUERY,
            max_bytes=1_000_000,
        )
        await reader.read(base_url(server).rstrip("/"), ())
        assert await pool.run(abs, -1) == 1  # replaced
    (record,) = records
    assert record.fetch.request.url == base_url(server) + "sitemap.xml"
    assert record.parse_error is not None and "exited (code 9)" in record.parse_error
    assert not record.children
