"""What flows between the stages: frontier → fetch → parse → sink.

All are small frozen value objects; the parse ones cross a process boundary, so they stay picklable.
"""

from __future__ import annotations

import enum
import fnmatch
import json
from dataclasses import dataclass, field
from typing import Literal

from scraper.picklable import out_of_band, pickled_as_arguments
from scraper.urls import KEEP_QUERY, Scope, UrlPolicy

Take = Literal["text", "html", "attr"]
# parse.text: what the parser computes of the visible text: its length and hash, those and the
# text itself, or nothing (no text pass at all).
TextMode = Literal["hash", "store", "off"]

# The statuses of a redirect: its Location is the next hop (304 Not Modified is not one).
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ErrorKind(enum.StrEnum):
    """Why a page has no usable response: `pages.error_kind`, stored as these very strings."""

    HTTP = "http"  # a 4xx or 5xx status (429 and 5xx after their retries)
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # refused, reset, unreachable
    DNS = "dns"  # the name does not resolve
    PROTOCOL = "protocol"  # a malformed response
    INVALID_URL = "invalid_url"
    BLOCKED = "blocked"  # an address fetch.block_private refuses: no packet was sent
    OUT_OF_SCOPE = "out_of_scope"  # a robots.txt or sitemap URL (or a hop of its redirects)
    TOO_LARGE = "too_large"  # a body over fetch.max_bytes, abandoned
    REDIRECTS = "redirects"  # a redirect loop, or more hops than fetch.max_redirects
    ROBOTS = "robots"  # robots.txt disallows the URL, or its host is skipped for robots.txt
    SITEMAP = "sitemap"  # a sitemap that could not be read
    PARSE = "parse"  # the parser failed on the page, or ran past parse.timeout


@dataclass(frozen=True, slots=True)
class CrawlRequest:
    """One URL the crawl means to fetch, already canonical."""

    url: str
    depth: int = 0
    referrer: str | None = None
    etag: str | None = None  # validators of the stored page, for a conditional request
    last_modified: str | None = None
    fresh: bool = False  # stored more recently than crawl.recrawl_after: not fetched again
    hops: int = 0  # redirects followed to reach this URL


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What the fetch stage learnt about one request: a response, or why there is none."""

    request: CrawlRequest
    fetched_at: str
    attempts: int
    status: int | None = None
    final_url: str | None = None  # after a redirect: its target, the next hop
    content_type: str | None = None  # the raw Content-Type header, charset included
    body: bytes | None = None  # only for HTML that should be parsed
    bytes: int | None = None
    elapsed_ms: float | None = None
    etag: str | None = None
    last_modified: str | None = None
    throttled: bool = False  # a 429 or 503 came back on some attempt
    retry_after: float | None = None  # the longest Retry-After seen, seconds
    error_kind: ErrorKind | None = None
    error: str | None = None

    @property
    def parsable(self) -> bool:
        return self.body is not None and self.error_kind is None


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class ExtractRule:
    """One `[extract]` field: a CSS selector, what to take from the matches, and an optional
    regular expression that trims each value (to its first group, or else to the whole match)."""

    name: str
    css: str
    take: Take = "text"
    attr: str | None = None
    all: bool = False
    regex: str | None = None


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class RuleSet:
    """Fields for the pages whose URL matches one of `urls` (shell-style globs: `*`, `?`, `[ ]`)."""

    urls: tuple[str, ...]
    rules: tuple[ExtractRule, ...]

    def matches(self, url: str) -> bool:
        return any(fnmatch.fnmatchcase(url, pattern) for pattern in self.urls)


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Extraction:
    """All the `[extract]` rules: those for every page, and the per-URL-pattern rule sets."""

    every: tuple[ExtractRule, ...] = ()
    sets: tuple[RuleSet, ...] = ()

    def rules_for(self, url: str) -> tuple[ExtractRule, ...]:
        """The rules for one page: every page's, then each matching set's; a later name wins."""
        rules = {rule.name: rule for rule in self.every}
        for rule_set in self.sets:
            if rule_set.matches(url):
                rules.update((rule.name, rule) for rule in rule_set.rules)
        return tuple(rules.values())


@out_of_band("body")  # through the parse pool's shared memory, not its pipe
@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class ParseJob:
    """The input of the pure parser function (sent to a worker process)."""

    url: str
    body: bytes
    content_type: str | None
    rules: Extraction = Extraction()
    text: TextMode = "hash"  # parse.text
    policy: UrlPolicy = KEEP_QUERY  # how links are canonicalised
    scope: Scope | None = None  # which links to follow (None: all)
    regex_timeout: float = 0.1  # parse.regex_timeout: seconds a field's regex has per value


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class ParseResult:
    """What the parser found in one HTML page (returned from a worker process).

    The links and fields come as the JSON the database stores, encoded in the worker: the loop
    only passes them on (`links` and `fields` decode them, for whoever wants the values)."""

    encoding: str
    title: str | None = None
    description: str | None = None
    canonical: str | None = None
    text_length: int | None = None  # the visible text's (scraper.parse.text); None: parse.text off
    text_hash: str | None = None
    text: str | None = None  # only with parse.text = "store"
    links_json: str = "[]"  # every outgoing link, in document order, each once
    follow: tuple[str, ...] = ()  # the links within the crawl's scope (depth aside)
    fields_json: str | None = None  # the [extract] values; None when there are no rules
    links_cut: int = 0  # links dropped: past crawl.max_links_per_page, or over max_url_length
    # The fields that gave up on this page (a regex over its time), each with why, as JSON:
    # their values are null, and the page, its links and its other fields stand.
    field_errors_json: str | None = None

    @property
    def links(self) -> tuple[str, ...]:
        return tuple(json.loads(self.links_json))

    @property
    def fields(self) -> dict[str, str | list[str] | None]:
        return json.loads(self.fields_json) if self.fields_json else {}

    @property
    def field_errors(self) -> dict[str, str]:
        return json.loads(self.field_errors_json) if self.field_errors_json else {}


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class ParseFailure:
    """The parser raised on one page (a bug, or markup it cannot handle): why, for the record."""

    error: str


@dataclass(frozen=True, slots=True)
class PageRecord:
    """One row for the sink: a fetch outcome and, for HTML, what the parser found."""

    fetch: FetchResult
    parsed: ParseResult | None = None
    parse_error: str | None = None
    children: tuple[CrawlRequest, ...] = ()  # links in scope, for the frontier


@dataclass(frozen=True, slots=True)
class CrawlSnapshot:
    """A crawl's counters at one moment, for a progress display; read-only, cheap to take."""

    pages: int = 0  # the crawl's: stored before, by other processes, and handed to the sink
    errors: int = 0  # of those, the ones stored with an error
    bytes: int = 0
    queued: int = 0  # the crawl's URLs not yet fetched: in its frontier and admitted (below)
    in_flight: int = 0  # the crawl's requests on the wire now, over every process on it
    queued_capped: bool = False  # `queued` counted the frontier's pending URLs up to a bound
    processes: int = 1  # processes on the crawl (a fleet), this one included
    here_queued: int = 0  # this process's: admitted, not yet fetched
    here_in_flight: int = 0  # this process's requests on the wire (at most fetch.concurrency)
    max_pages: int = 0  # crawl.max_pages: 0 = no bound
    loop_lag_p50_ms: float = 0.0  # how late the event loop wakes tasks, so far (p50, p99, max)
    loop_lag_p99_ms: float = 0.0
    loop_lag_max_ms: float = 0.0
    database_away_s: float | None = None  # paused, reconnecting to the database for so long


@dataclass(frozen=True, slots=True)
class SeedList:
    """What names a crawl's list of seeds (crawl/seeds.py): its digest, its size, a sample;
    and the lines of a seeds file that were refused."""

    digest: str  # "sha256:<hex>" of the canonical seeds, one a line, in order
    count: int
    sample: tuple[str, ...]
    bad: int = 0
    bad_lines: tuple[str, ...] = field(default=())  # the first few, as "line N: why"
