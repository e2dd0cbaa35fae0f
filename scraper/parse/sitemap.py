"""Sitemap parsing: one sitemap's bytes → its page URLs and child sitemaps, in worker processes.

`parse_sitemap` is a pure top-level function of picklable values, like `page.parse_page`: it
un-gzips with a size cap, then reads the XML incrementally with lxml, entities and network access
off, taking `<loc>` from `<url>` (pages) and `<sitemap>` (child sitemaps of an index). Reading a
site's sitemaps (fetching, following indexes) is the crawl's: `crawl/sitemaps.py`.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

from lxml import etree

from scraper.urls import Scope, UrlPolicy, canonicalize


@dataclass(frozen=True, slots=True)
class SitemapJob:
    url: str
    body: bytes
    max_bytes: int  # the cap on the decompressed size of a gzipped sitemap
    policy: UrlPolicy
    scope: Scope


@dataclass(frozen=True, slots=True)
class Sitemap:
    pages: tuple[str, ...] = ()
    sitemaps: tuple[str, ...] = ()
    error: str | None = None


def parse_sitemap(job: SitemapJob) -> Sitemap:
    """The page URLs (canonical, in scope) and child sitemap URLs (canonical) of one sitemap,
    plain or gzipped XML; never raises."""
    try:
        xml = _gunzip(job.body, job.max_bytes) if job.body[:2] == b"\x1f\x8b" else job.body
    except (zlib.error, ValueError) as exc:
        return Sitemap(error=f"not a readable gzip file: {exc}")
    pages: list[str] = []
    sitemaps: list[str] = []
    try:
        for _, element in etree.iterparse(
            io.BytesIO(xml), events=("end",), resolve_entities=False, no_network=True,
            huge_tree=False, load_dtd=False,
        ):  # fmt: skip
            if _local(element.tag) == "loc" and element.text:
                parent = element.getparent()
                kind = _local(parent.tag) if parent is not None else ""
                (sitemaps if kind == "sitemap" else pages).append(element.text.strip())
            if _local(element.tag) in ("url", "sitemap"):
                element.clear()  # constant memory for any size
    except etree.XMLSyntaxError as exc:
        return Sitemap(*_canonical(job, pages, sitemaps), error=f"invalid XML: {exc}")
    return Sitemap(*_canonical(job, pages, sitemaps))


def _canonical(
    job: SitemapJob, pages: list[str], sitemaps: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    found: dict[str, None] = {}
    for raw in pages:
        url = canonicalize(raw, job.url, job.policy)
        if url is not None and job.scope.allows(url, base=job.url):
            found[url] = None
    children = (canonicalize(raw, job.url, job.policy) for raw in sitemaps)
    return tuple(found), tuple(dict.fromkeys(u for u in children if u))


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise ValueError(f"larger than {limit} bytes once decompressed")
    return out


def _local(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""
