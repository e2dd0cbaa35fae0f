"""Admission: links within depth, redirects followed or recorded, kept pages' stored links, and
the cache of recently seen URLs (pure policy, tested without a crawl; test_fetch.py and
test_resume.py have the crawls that go through it)."""

from __future__ import annotations

import re

from scraper.crawl.admit import Admission, SeenCache
from scraper.models import CrawlRequest, FetchResult, PageRecord
from scraper.urls import KEEP_QUERY, Scope, in_scope

SCOPE = Scope(allowed_domains=("example.com",))


def admission(
    max_depth: int = 0, max_redirects: int = 5, stored: tuple[str, ...] = ()
) -> Admission:
    async def links_from(url: str) -> list[str]:
        return list(stored)

    return Admission(
        scope=SCOPE,
        policy=KEEP_QUERY,
        max_depth=max_depth,
        max_redirects=max_redirects,
        links_from=links_from,
    )


async def redirect(admit: Admission, url: str, target: str, hops: int = 0) -> PageRecord:
    """The record of `url` (reached after `hops` redirects) answering 302 to `target`."""
    request = CrawlRequest(url=url, depth=2, hops=hops)
    result = FetchResult(request, fetched_at="", attempts=1, status=302, final_url=target)
    return await admit.redirect(result, target)


def test_links_are_one_level_deeper_within_max_depth_and_each_once() -> None:
    admit = admission(max_depth=3)
    parent = CrawlRequest(url="http://example.com/", depth=2)
    follow = ["http://example.com/a", "http://example.com/b", "http://example.com/a"]
    children = admit.links(parent, follow)
    assert [(c.url, c.depth, c.referrer) for c in children] == [
        ("http://example.com/a", 3, "http://example.com/"),
        ("http://example.com/b", 3, "http://example.com/"),
    ]
    assert admit.links(parent, follow) == ()  # seen very recently: no second row
    deepest = CrawlRequest(url="http://example.com/x", depth=3)
    assert admit.links(deepest, ["http://example.com/c"]) == ()  # one level too deep


async def test_a_redirect_target_is_a_canonical_child_one_hop_further() -> None:
    record = await redirect(admission(), "http://example.com/a", "http://EXAMPLE.com/b#f")
    (child,) = record.children
    assert (child.url, child.depth, child.referrer, child.hops) == (
        "http://example.com/b", 2, "http://example.com/a", 1,
    )  # fmt: skip
    assert record.fetch.error_kind is None


async def test_redirects_to_itself_or_too_far_are_recorded_as_errors() -> None:
    admit = admission(max_redirects=2)
    looped = await redirect(admit, "http://example.com/a", "http://example.com/a")
    assert (looped.fetch.error_kind, looped.fetch.error, looped.children) == (
        "redirects", "redirects to itself (fetch.max_redirects = 2)", (),
    )  # fmt: skip
    far = await redirect(admit, "http://example.com/a", "http://example.com/b", hops=2)
    assert far.fetch.error == "too many redirects (fetch.max_redirects = 2)"


async def test_redirects_out_of_scope_or_not_followed_are_stored_as_they_are() -> None:
    away = await redirect(admission(), "http://example.com/a", "http://elsewhere.example/")
    assert (away.children, away.fetch.error_kind) == ((), None)
    kept = await redirect(
        admission(max_redirects=0), "http://example.com/a", "http://example.com/b"
    )
    assert (kept.children, kept.fetch.error_kind) == ((), None)


async def test_a_kept_page_admits_its_stored_links_in_scope() -> None:
    stored = ["http://example.com/a", "http://elsewhere.example/", "http://example.com/b"]
    request = CrawlRequest(url="http://example.com/", depth=0, fresh=True)
    kept = FetchResult(request, fetched_at="", attempts=0)
    record = await admission(stored=tuple(stored)).kept_page(kept)
    assert record.fetch is kept
    assert [c.url for c in record.children] == ["http://example.com/a", "http://example.com/b"]


def test_the_seen_cache_forgets_the_oldest_and_stays_bounded() -> None:
    seen = SeenCache(3)
    assert seen.admit(["a", "b", "a"]) == ["a", "b"]
    assert seen.admit(["c", "d", "b"]) == ["c", "d"]
    assert len(seen) == 3
    assert seen.admit(["a"]) == ["a"]  # the oldest, "a", was forgotten when "d" came
    assert seen.admit(["d", "c"]) == []
    seen.admit(str(n) for n in range(1000))
    assert len(seen) == 3


async def test_only_the_scope_s_regexes_go_to_a_worker() -> None:
    """With crawl.include/exclude, whether a redirect is followed is decided by `select` (in a
    parse worker, within parse.timeout); without them here, with no user regex to run."""
    asked: list[tuple[str, ...]] = []

    def admission_with(scope: Scope) -> Admission:
        async def select(urls: tuple[str, ...], base: str) -> tuple[str, ...]:
            asked.append(urls)
            return in_scope((scope, urls, base))

        async def links_from(url: str) -> list[str]:
            return []

        return Admission(
            scope=scope, policy=KEEP_QUERY, max_depth=0, max_redirects=5,
            links_from=links_from, select=select,
        )  # fmt: skip

    plain = await redirect(admission_with(SCOPE), "http://example.com/a", "http://example.com/b")
    assert len(plain.children) == 1 and asked == []
    excluding = Scope(allowed_domains=("example.com",), exclude=(re.compile("/b$"),))
    away = await redirect(admission_with(excluding), "http://example.com/a", "http://example.com/b")
    assert away.children == () and asked == [("http://example.com/b",)]
