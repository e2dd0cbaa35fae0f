"""Following robots.txt's and sitemaps' redirects: hops, loops, the limit, the boundary."""

from __future__ import annotations

from scraper.crawl.redirects import follow_redirects
from scraper.models import CrawlRequest, ErrorKind, FetchResult

ROOT = "http://127.0.0.1:8000"


class Site:
    """Each URL's answer: a redirect to another, or a body; and the hops asked for."""

    def __init__(self, moves: dict[str, str], outside: frozenset[str] = frozenset()) -> None:
        self.moves, self.outside, self.asked = moves, outside, []

    async def fetch(self, request: CrawlRequest) -> FetchResult:
        url = request.url
        self.asked.append(url)
        if url in self.outside:
            return FetchResult(
                request=request, fetched_at="now", attempts=0,
                error_kind=ErrorKind.OUT_OF_SCOPE, error="outside the crawl's scope: elsewhere",
            )  # fmt: skip
        if url in self.moves:
            return FetchResult(
                request=request, fetched_at="now", attempts=1, status=301, final_url=self.moves[url]
            )
        return FetchResult(request=request, fetched_at="now", attempts=1, status=200, body=b"ok")


async def follow(site: Site, url: str, limit: int = 3) -> FetchResult:
    return await follow_redirects(await site.fetch(CrawlRequest(url)), site.fetch, limit)


async def test_hops_are_followed_to_the_end_as_the_first_requests_result() -> None:
    site = Site({f"{ROOT}/a": f"{ROOT}/b", f"{ROOT}/b": f"{ROOT}/c"})
    done = await follow(site, f"{ROOT}/a")
    assert (done.status, done.body, done.final_url) == (200, b"ok", f"{ROOT}/c")
    assert done.request.url == f"{ROOT}/a"
    assert site.asked == [f"{ROOT}/a", f"{ROOT}/b", f"{ROOT}/c"]


async def test_a_loop_stops_as_soon_as_a_url_comes_round_again() -> None:
    site = Site({f"{ROOT}/a": f"{ROOT}/b", f"{ROOT}/b": f"{ROOT}/a"})
    done = await follow(site, f"{ROOT}/a", limit=10)
    assert (done.error_kind, done.error) == (
        ErrorKind.REDIRECTS,
        "a redirect loop (fetch.max_redirects = 10)",
    )
    assert len(site.asked) == 2


async def test_no_more_hops_than_the_limit() -> None:
    site = Site({f"{ROOT}/{n}": f"{ROOT}/{n + 1}" for n in range(10)})
    done = await follow(site, f"{ROOT}/0", limit=3)
    assert (done.error_kind, done.final_url) == (ErrorKind.REDIRECTS, f"{ROOT}/4")
    assert done.error == "too many redirects (fetch.max_redirects = 3)"
    assert len(site.asked) == 4  # the first request and three hops


async def test_a_hop_outside_the_boundary_says_where_it_was_redirected() -> None:
    site = Site({f"{ROOT}/a": "http://elsewhere.test/"}, frozenset({"http://elsewhere.test/"}))
    done = await follow(site, f"{ROOT}/a")
    assert done.error_kind == ErrorKind.OUT_OF_SCOPE
    assert (
        done.error == "redirected to http://elsewhere.test/: outside the crawl's scope: elsewhere"
    )


async def test_a_result_that_is_no_redirect_is_kept_as_it_is() -> None:
    site = Site({})
    first = await site.fetch(CrawlRequest(f"{ROOT}/a"))
    assert await follow_redirects(first, site.fetch, 3) is first
