"""What flows between the stages: frontier → fetch → parse → sink.

All are small frozen value objects; the parse ones cross a process boundary, so they stay picklable.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
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
    CALLBACK = "callback"  # the spider's callback raised (or yielded what cannot be stored)


@pickled_as_arguments  # a spider's requests come back from the parse workers, dozens a page
@dataclass(frozen=True, slots=True)
class CrawlRequest:
    """One request the crawl means to make, its URL already canonical.

    The fields after `hops` are a spider's request (`scraper.Request`), each a column of the
    frontier (store/rows.py REQUEST_COLUMNS), None for a plain link: a GET of the URL, parsed by
    the default callback. Its identity in the frontier and the pages table is `identity`: the
    URL itself for a plain GET, so the crawls without a spider are keyed as they always were."""

    url: str
    depth: int = 0
    referrer: str | None = None
    etag: str | None = None  # validators of the stored page, for a conditional request
    last_modified: str | None = None
    fresh: bool = False  # stored more recently than crawl.recrawl_after: not fetched again
    hops: int = 0  # redirects followed to reach this URL
    method: str | None = None  # None: GET
    headers: str | None = None  # JSON object of the request's own headers
    body: bytes | None = None
    callback: str | None = None  # the spider's method for the response (None: "parse")
    meta: str | None = None  # JSON object, handed to the callback as page.meta
    key: str | None = None  # the identity when it is not the URL (`request_key`)
    # The stored page's response record in the WARC archive (storage.warc): its WARC-Date and
    # payload digest, which a 304's revisit record refers to. None: not archived.
    archived_date: str | None = None
    archived_digest: str | None = None

    @property
    def identity(self) -> str:
        """The request's unique key: its URL, or for another method, a body, or dont_filter,
        the URL with a fragment naming them (a canonical URL never has a fragment)."""
        return self.key or self.url

    @property
    def verb(self) -> str:
        return self.method or "GET"


def request_key(url: str, method: str, body: bytes | None, token: str | None) -> str | None:
    """A request's key when it is not its URL (None: it is). A GET without a body is its URL,
    as every link of a crawl is; another method, a body, or a `dont_filter` token (the yielding
    page's identity and the request's place among its requests) make the URL with a fragment
    `#<METHOD>-<digest of method, body and token>`, which no canonical URL has."""
    if method == "GET" and not body and token is None:
        return None
    digest = hashlib.sha256(method.encode() + b"\0" + (body or b""))
    if token is not None:
        digest.update(b"\0" + token.encode())
    return f"{url}#{method}-{digest.hexdigest()[:20]}"


@out_of_band("body")  # through the archive writer's shared memory, not its pipe
@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its response as they went over the wire: what the WARC archive keeps
    (storage.warc; written by scraper/archive/records.py in the writer process)."""

    url: str
    date: str  # when the request started (FetchResult.fetched_at)
    ip: str | None  # the address connected to (WARC-IP-Address)
    request_head: bytes  # the request line and the headers sent, up to the blank line
    response_head: bytes  # the status line and the headers received, up to the blank line
    body: bytes  # as received: Content-Encoding kept (transfer coding removed)
    truncated: str | None = None  # WARC-Truncated: "length" (a limit), "unspecified" (not read)
    # A 304 to a conditional request: the WARC-Date and payload digest of the stored page's
    # response record, which its revisit record refers to.
    revisit_of: tuple[str, str] | None = None


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Archived:
    """Where a response (or revisit) record went: a WARC file of the storage.warc folder, the
    offset and length of its gzip member there, and what a CDXJ line says of it."""

    file: str  # the file's final name (without ".open"), in the storage.warc folder
    offset: int
    length: int
    date: str  # its WARC-Date
    digest: str  # its WARC-Payload-Digest, "sha1:" and base 32


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
    headers: tuple[tuple[str, str], ...] = ()  # the response's, for a spider's page.headers
    exchange: Exchange | None = None  # what went on the wire, with storage.warc set
    archived: Archived | None = None  # where it went in the archive (then `exchange` is None)

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


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class SpiderCall:
    """What a parse worker needs to call a spider's callback on a page: which spider (its
    class, found by `spider/load.py`), which callback, and what the page's request carried."""

    spider: SpiderRef
    callback: str  # a method of the spider
    meta: str | None  # JSON object, or None for {}
    status: int
    headers: tuple[tuple[str, str], ...]  # the response's
    depth: int
    identity: str  # the page's request identity (what dont_filter derives a request's from)


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class SpiderRef:
    """A spider class as a worker process finds it: a module to import (with `path` put first
    on sys.path), or a Python file to load; its class name; and the digest of its source, which
    every process on one crawl must share."""

    module: str | None  # a module name; None: load `file`
    file: str | None  # an absolute path
    path: str | None  # a folder for sys.path (the crawl's working directory), for `module`
    name: str  # the class, in the module
    digest: str  # "sha256:<hex>" of the module's source

    @property
    def spec(self) -> str:
        """As a user writes it: `shop.py:Shop` or `shop.spiders:Shop`."""
        return f"{self.module or self.file}:{self.name}"


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
    spider: SpiderCall | None = None  # a spider's callback to call on the page


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
    # The links within the crawl's scope (depth aside); with a spider, instead, the plain
    # requests its callback yielded (GETs for `parse`, nothing else: followed as links are).
    follow: tuple[str, ...] = ()
    fields_json: str | None = None  # the [extract] values; None when there are no rules
    links_cut: int = 0  # links dropped: past crawl.max_links_per_page, or over max_url_length
    # The fields that gave up on this page (a regex over its time), each with why, as JSON:
    # their values are null, and the page, its links and its other fields stand.
    field_errors_json: str | None = None
    # A spider's callback: the items it yielded (each a JSON object, in order, after the
    # spider's process_item), its other requests (in scope, canonical, not yet given a depth),
    # and why it failed (then none of them: a page's callback counts whole or not at all).
    items: tuple[str, ...] = ()
    requests: tuple[CrawlRequest, ...] = ()
    callback_error: str | None = None
    callback_trace: str | None = None  # the traceback of callback_error, for the DEBUG log

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


@dataclass(frozen=True, slots=True)
class SeedList:
    """What names a crawl's list of seeds (crawl/seeds.py): its digest, its size, a sample;
    and the lines of a seeds file that were refused."""

    digest: str  # "sha256:<hex>" of the canonical seeds, one a line, in order
    count: int
    sample: tuple[str, ...]
    bad: int = 0
    bad_lines: tuple[str, ...] = field(default=())  # the first few, as "line N: why"
