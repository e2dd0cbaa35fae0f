"""parse_sitemap: gzip bombs, entities, odd <loc>s (a pure function, tested without a loop)."""

from __future__ import annotations

import gzip

from scraper.parse.sitemap import SitemapJob, parse_sitemap
from scraper.urls import KEEP_QUERY, Scope

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(urls: list[str]) -> bytes:
    body = "".join(f"<url><loc>{u}</loc><lastmod>2026-01-01</lastmod></url>" for u in urls)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{body}</urlset>'.encode()


def job(body: bytes) -> SitemapJob:
    scope = Scope(allowed_domains=("example.com",))
    return SitemapJob("http://example.com/sitemap.xml", body, 1_000_000, KEEP_QUERY, scope)


def test_a_gzip_bomb_is_refused() -> None:
    bomb = gzip.compress(b"<urlset>" + b" " * 5_000_000 + b"</urlset>")
    assert "larger than" in (parse_sitemap(job(bomb)).error or "")


def test_entities_are_not_expanded() -> None:
    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<urlset><url><loc>http://example.com/&b;</loc></url></urlset>"
    )
    result = parse_sitemap(job(laughs))
    assert all("aaaaaaaaaa" not in url for url in result.pages)


def test_relative_and_odd_locs() -> None:
    body = urlset(["/relative", "  http://EXAMPLE.com/padded  ", "mailto:x@example.com", ""])
    assert parse_sitemap(job(body)).pages == (
        "http://example.com/relative",
        "http://example.com/padded",
    )
