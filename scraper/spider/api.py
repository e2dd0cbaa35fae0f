"""The public names a spider is written with: `scraper.Spider` and `scraper.Request`.

This module imports nothing heavy: `import scraper` (and every parse worker) reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from scraper.spider.page import Page


@dataclass(frozen=True, slots=True)
class Request:
    """A request a callback asks for: `yield scraper.Request(url, callback="product")`.

    `url` may be relative: it resolves against the page (`page.follow` does the same). `callback`
    names the spider's method that gets the response; `meta` (a JSON-serialisable dict) reaches
    it as `page.meta`. `method`, `headers` and `body` (str is sent as UTF-8) are sent as given.

    A request passes the crawl's scope, robots.txt, politeness, `crawl.max_pages` and
    de-duplication, as a link does. Its identity is its method, URL and body: a URL reached twice
    with different callbacks or meta is fetched once, for the first request stored (as Scrapy's
    duplicate filter does). `dont_filter=True` gives the request an identity of its own, derived
    from the page that yielded it and its place among that page's requests, so it is fetched
    even if its URL was (once per yielding page: a resumed crawl does not repeat it)."""

    url: str
    callback: str = "parse"
    meta: Mapping[str, Any] | None = None
    method: str = "GET"
    headers: Mapping[str, str] | None = None
    body: bytes | str | None = None
    dont_filter: bool = False


# What a callback may yield (or return as a list): items and requests. None is skipped.
Output = Mapping[str, Any] | Request | None


class Spider:
    """The base of a spider: subclass it, and write `parse(self, page)` (the default callback,
    for the seeds and for requests that name no other).

    A callback takes a `Page` and yields (or returns a list of) `dict` items and `Request`s; it
    runs in a parse worker process, never on the crawl's event loop, within `parse.timeout`.
    One instance of the class is made per worker process and lives as long as it: keep no state
    on it that the crawl depends on (a page may go to any worker, or to another process of a
    fleet, or be parsed again after a resume)."""

    name: ClassVar[str] = ""  # for messages; the class's name when empty
    # Seeds, used when neither the command line nor crawl.seeds gives any.
    start_urls: ClassVar[Iterable[str]] = ()
    # The crawl's boundary (crawl.allowed_domains); empty: the seeds' hosts.
    allowed_domains: ClassVar[Iterable[str]] = ()
    # Config keys ("fetch.per_host_delay": 1.0, ...): above config.toml, below --set.
    settings: ClassVar[Mapping[str, Any]] = {}

    def parse(self, page: Page) -> Iterable[Output]:
        """The default callback. The base class's yields nothing: a spider writes its own."""
        return ()

    def process_item(self, item: dict[str, Any], page: Page) -> dict[str, Any] | None:
        """Each item before it is stored, in the worker: return it (changed or not), or None to
        drop it. The base class's keeps every item as it is."""
        return item
