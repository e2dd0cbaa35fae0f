"""The typed, frozen sections of config.toml, one class per table, and the whole Config.

Each field's metadata holds its check (config/checks.py), which the loader runs on the value the
file gives; the defaults here are what an absent key means.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field

from scraper.config.checks import (
    Check,
    Invalid,
    addresses,
    boolean,
    choice,
    domain,
    duration,
    file_extension,
    integer,
    list_of,
    number,
    regex,
    seed,
    text,
    worker_count,
)
from scraper.config.cpus import auto_workers, usable_cpus
from scraper.config.sessions import (
    AuthEntry,
    HeaderRule,
    HeaderValue,
    header_rules,
    header_table,
    hide_credentials,
    proxy_url,
)
from scraper.errors import ConfigError
from scraper.models import Extraction, TextMode
from scraper.secrets import HIDDEN
from scraper.urls import Scope, UrlPolicy, canonicalize, domain_entry, host_of

# Skipped before fetching: images, archives, media, office documents, fonts, binaries.
SKIP_EXTENSIONS = tuple(
    [
        "jpg",
        "jpeg",
        "png",
        "gif",
        "webp",
        "svg",
        "ico",
        "bmp",
        "tif",
        "tiff",
        "avif",
        "heic",
        "zip",
        "tar",
        "gz",
        "tgz",
        "bz2",
        "xz",
        "7z",
        "rar",
        "zst",
        "mp3",
        "mp4",
        "m4a",
        "m4v",
        "avi",
        "mov",
        "mkv",
        "webm",
        "wav",
        "ogg",
        "oga",
        "ogv",
        "flac",
        "wmv",
        "wma",
        "pdf",
        "doc",
        "docx",
        "xls",
        "xlsx",
        "ppt",
        "pptx",
        "odt",
        "ods",
        "odp",
        "rtf",
        "epub",
        "woff",
        "woff2",
        "ttf",
        "otf",
        "eot",
        "exe",
        "msi",
        "dmg",
        "iso",
        "apk",
        "deb",
        "rpm",
        "bin",
    ]
)


def str_or_empty(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string (a file's path)")
    return value


def _opt(
    check: Check,
    doc: str,
    *,
    shown: str | None = None,
    kind: str | None = None,
    secret: bool = False,
) -> dict[str, object]:
    """A field's metadata: its check, and what the manual's configuration reference shows
    (config/reference.py): `doc` (Markdown), `shown` (the default as written in TOML, when it is
    not the Python default's spelling) and `kind` (the value's type, when not its annotation's).
    `secret`: the value may hold one (a token, a proxy's password): an error never shows it."""
    return {"check": check, "doc": doc, "shown": shown, "kind": kind, "secret": secret}


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlConfig:
    """What to crawl: the seeds, the scope (the crawl's boundary), the limits, resuming."""

    seeds: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            list_of(seed),
            "Start URLs (http or https). URLs given to `scraper crawl` on its command line "
            "replace them.",
        ),
    )
    seeds_file: str = field(
        default="",
        metadata=_opt(
            str_or_empty,
            'A file of start URLs, one a line (`#` comments and blank lines skipped; `"-"` = '
            "standard input), added to `seeds` and read 10,000 at a time, so a million seeds "
            "take no more memory than ten. Lines that are not http(s) URLs are counted and "
            "skipped (the first five shown). `--seeds-file FILE` sets it. With a seeds file and "
            "no `allowed_domains`, each page's links are followed within its own site (its "
            "registrable domain; its host with `include_subdomains = false`). "
            '`""` = none.',
        ),
    )
    spider: str = field(
        default="",
        metadata=_opt(
            str_or_empty,
            "A spider whose callbacks parse the pages (see the Spiders guide): "
            '`"shop.py:Shop"` (a file, relative to the working directory) or '
            '`"shop.spiders:Shop"` (a module). With a spider, links are followed only where a '
            "callback asks, and what the callbacks yield is stored in `items`. `--spider` sets "
            'it. `""` = none.',
        ),
    )
    allowed_domains: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            list_of(domain),
            "Hosts the crawl may fetch from, each with its subdomains (per "
            "`include_subdomains`); `[]` = the seeds' hosts. An entry with a port "
            "(`example.com:8080`) admits that port only. The crawl's boundary: no request goes "
            "outside it, robots.txt, sitemaps and every redirect hop included.",
        ),
    )
    max_depth: int = field(
        default=0,
        metadata=_opt(
            integer(0),
            "How many links away from a seed to go (a redirect's target keeps its depth); "
            "`0` = no limit.",
        ),
    )
    max_pages: int = field(
        default=0,
        metadata=_opt(
            integer(0),
            "How many URLs to take from the frontier at most (errors and skips count). A "
            "resumed crawl counts the pages it already stored; with several processes on one "
            "crawl (PostgreSQL) the limit is the whole crawl's, not each process's. A crawl "
            "that reaches it is `finished`, even with URLs still pending. `0` = no limit.",
        ),
    )
    max_pages_per_host: int = field(
        default=0,
        metadata=_opt(
            integer(0),
            "The same, per host (host and port): counted over the whole crawl, across resumes "
            "and processes, on SQLite and PostgreSQL alike, so a resumed crawl counts what "
            "each host already has. `0` = no limit.",
        ),
    )
    obey_robots: bool = field(
        default=True,
        metadata=_opt(
            boolean,
            "Fetch each host's robots.txt once and skip what it disallows (stored with "
            "`error_kind = 'robots'`, never fetched); its `Crawl-delay` becomes the host's "
            "least delay.",
        ),
    )
    sitemaps: bool = field(
        default=True,
        metadata=_opt(
            boolean,
            "Read each site's sitemaps (the `Sitemap:` lines of its robots.txt, else "
            "`/sitemap.xml`; indexes up to three levels, gzipped files too) and add the pages "
            "they list, within the scope, to the frontier.",
        ),
    )
    queue_size: int = field(
        default=1000,
        metadata=_opt(
            integer(1),
            "Pending URLs held in memory, over at most this many hosts (16 at least); the rest "
            "wait in the database's `frontier` table, so memory does not grow with the "
            "frontier. In a fleet, also the most hosts one process claims.",
        ),
    )
    shutdown_grace: float = field(
        default=10.0,
        metadata=_opt(
            number(0),
            "On Ctrl-C or SIGTERM, seconds given to the requests in flight before they are "
            "abandoned. A process on a crawl shared with others abandons them at once, to hand "
            "its hosts on; the grace then bounds the parsing and storing of what it fetched.",
        ),
    )
    recrawl_after: float = field(
        default=0.0,
        metadata=_opt(
            duration,
            'A new crawl skips pages stored more recently than this (`"12h"`, `"7d"`, or '
            "seconds), yet still follows their stored links, and asks for older ones "
            "conditionally (`If-None-Match` / `If-Modified-Since`). `0` = re-fetch every page "
            "(still conditionally).",
            shown="0",
            kind='seconds, or a duration such as "90s", "30m", "12h", "7d"',
        ),
    )
    denied_domains: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            list_of(domain),
            "Hosts never to fetch from, each with its subdomains (per `include_subdomains`).",
        ),
    )
    include_subdomains: bool = field(
        default=True,
        metadata=_opt(
            boolean,
            "Whether `allowed_domains` and `denied_domains` also cover subdomains "
            "(`www.example.com`, ...).",
        ),
    )
    include: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            list_of(regex),
            "Regexes (Python syntax) on the canonical URL: when not empty, a link must match "
            "one to be followed. They run in the parse workers, never on the event loop.",
        ),
    )
    exclude: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            list_of(regex), "Regexes on the canonical URL; a link that matches any is not followed."
        ),
    )
    skip_extensions: tuple[str, ...] = field(
        default=SKIP_EXTENSIONS,
        metadata=_opt(
            list_of(file_extension),
            "Links to files with these extensions (images, archives, media, office documents, "
            "fonts, binaries) are not fetched; they stay in their page's links.",
        ),
    )
    query: str = field(
        default="keep",
        metadata=_opt(
            choice("keep", "sort", "drop"),
            'Query strings in canonical URLs: `"keep"` them as they are, `"sort"` their '
            'parameters, or `"drop"` them.',
        ),
    )
    drop_params: tuple[str, ...] = field(
        default=("utm_*", "fbclid", "gclid"),
        metadata=_opt(
            list_of(text),
            "Query parameters removed from every URL whatever `query` says (globs on the "
            "parameter's name): tracking parameters by default.",
        ),
    )
    max_links_per_page: int = field(
        default=5000,
        metadata=_opt(
            integer(0),
            "A page's links past the first this many (distinct, in document order) are neither "
            "stored nor followed; `pages.links_cut` counts them. `0` = all.",
        ),
    )
    max_url_length: int = field(
        default=2083,
        metadata=_opt(
            integer(0),
            "URLs longer than this many characters are dropped wherever they come from (links, "
            "sitemap entries, redirect targets), as browsers and Scrapy do; a page's are counted "
            "in `pages.links_cut`. `0` = any length.",
        ),
    )

    def __post_init__(self) -> None:
        policy = self.url_policy()
        seeds = tuple(canonicalize(seed, policy=policy) or seed for seed in self.seeds)
        object.__setattr__(self, "seeds", seeds)
        if not self.allowed_domains and self.seeds and not self.seeds_file:
            hosts = (host_of(seed) for seed in self.seeds)
            domains = tuple(dict.fromkeys(domain_entry(host) or host for host in hosts))
            object.__setattr__(self, "allowed_domains", domains)

    def url_policy(self) -> UrlPolicy:
        return UrlPolicy(query=self.query, drop_params=self.drop_params)

    def scope(self) -> Scope:
        return Scope(
            allowed_domains=self.allowed_domains,
            denied_domains=self.denied_domains,
            include_subdomains=self.include_subdomains,
            include=tuple(re.compile(p) for p in self.include),
            exclude=tuple(re.compile(p) for p in self.exclude),
            skip_extensions=frozenset(self.skip_extensions),
            max_depth=self.max_depth,
            max_url_length=self.max_url_length,
            max_links=self.max_links_per_page,
            same_site=bool(self.seeds_file) and not self.allowed_domains,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchConfig:
    """How to fetch: concurrency, per-host politeness, timeouts, retries, the address guard."""

    concurrency: int = field(
        default=16,
        metadata=_opt(
            integer(1),
            "Requests in flight at once, over all hosts (fewer, with a warning, if the "
            "open-files limit cannot hold them). `--concurrency N` sets it.",
        ),
    )
    per_host_concurrency: int = field(
        default=8,
        metadata=_opt(
            integer(1),
            "Requests in flight to one host at once (host and port; or one domain or address, "
            "per `politeness_key`), robots.txt and sitemaps included.",
        ),
    )
    per_host_delay: float = field(
        default=0.0,
        metadata=_opt(
            number(0),
            "The least time, in seconds, between the starts of two requests to one host (the "
            "same), robots.txt and sitemaps included. A Crawl-delay, a backoff or a "
            "Retry-After can make it longer.",
        ),
    )
    autothrottle: bool = field(
        default=True,
        metadata=_opt(
            boolean,
            "Adapt each host's concurrency and delay to its latency and errors (additive "
            "increase, multiplicative decrease; a 429 or 503 halves the concurrency).",
        ),
    )
    robots_timeout: float = field(
        default=10.0,
        metadata=_opt(number(0, exclusive=True), "Seconds allowed for fetching one robots.txt."),
    )
    user_agent: str = field(
        default="scraper/0.1 (+set fetch.user_agent to a way to reach you)",
        metadata=_opt(
            text, "The User-Agent header of every request: say who you are and how to reach you."
        ),
    )
    connect_timeout: float = field(
        default=10.0, metadata=_opt(number(0, exclusive=True), "Seconds to connect.")
    )
    read_timeout: float = field(
        default=30.0,
        metadata=_opt(number(0, exclusive=True), "Seconds between two reads of a response."),
    )
    total_timeout: float = field(
        default=60.0,
        metadata=_opt(number(0, exclusive=True), "Seconds for a whole request, body included."),
    )
    max_bytes: int = field(
        default=10 * 1024 * 1024,
        metadata=_opt(
            integer(1),
            "Larger bodies (after decompression) are abandoned and recorded as `too_large`; "
            "also the cap on a gzipped sitemap once decompressed.",
        ),
    )
    max_redirects: int = field(
        default=10,
        metadata=_opt(
            integer(0),
            "Redirect hops to follow; a longer chain (or a URL redirecting to itself) is "
            "recorded as a `redirects` error. `0` = store the redirect itself.",
        ),
    )
    retries: int = field(
        default=2,
        metadata=_opt(
            integer(0),
            "Retries after the first attempt (so at most 3 attempts by default) for connection "
            "errors, timeouts, 429 and 5xx. Other 4xx are stored, not retried.",
        ),
    )
    retry_backoff: float = field(
        default=0.5,
        metadata=_opt(
            number(0),
            "Seconds before the first retry; it doubles with each retry, plus up to this much "
            "random jitter, and is never shorter than the host's delay.",
        ),
    )
    retry_backoff_max: float = field(
        default=30.0,
        metadata=_opt(
            number(0),
            "The longest backoff, in seconds; also the wait before asking an unavailable "
            "robots.txt again (three rounds).",
        ),
    )
    max_retry_after: float = field(
        default=60.0,
        metadata=_opt(
            number(0), "The longest wait, in seconds, that a `Retry-After` header can ask for."
        ),
    )
    politeness_key: str = field(
        default="host",
        metadata=_opt(
            choice("host", "domain", "ip"),
            'What the per-host limits and throttling apply to: `"host"` (host and port), '
            '`"domain"` (every host of one registrable domain, from the Public Suffix List that '
            'the `publicsuffixlist` package ships: nothing is downloaded), or `"ip"` (every name '
            "served from one IP address, after DNS; one process per crawl only: `--workers` and "
            "`scraper worker` refuse it). robots.txt stays per host (RFC 9309).",
        ),
    )
    dns_ttl: float = field(
        default=300.0,
        metadata=_opt(
            number(0),
            "Seconds a resolved host name is cached (one look-up per name per this long, shared "
            "by concurrent requests).",
        ),
    )
    resolve: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata=_opt(
            addresses,
            "Host names answered without DNS, as curl's `--resolve`: "
            '`{"staging.example.com" = "10.0.0.5"}`.',
            shown="{}",
            kind="table of host name = IP address",
        ),
    )
    max_crawl_delay: float = field(
        default=30.0,
        metadata=_opt(
            number(0),
            "A host whose robots.txt asks for a longer `Crawl-delay` (seconds) is skipped: its "
            "URLs are recorded with `error_kind = 'robots'` and the reason (as Nutch does).",
        ),
    )
    block_private: bool = field(
        default=True,
        metadata=_opt(
            boolean,
            "Refuse to connect to loopback, private, link-local (the cloud metadata service "
            "included), unique-local, multicast and other non-public addresses, checked on the "
            "address actually connected to. The hosts of `crawl.seeds` are exempt, so a local "
            "site can be crawled; refusals are recorded as `error_kind = 'blocked'`, with "
            "nothing sent.",
        ),
    )
    headers: tuple[tuple[str, HeaderValue], ...] = field(
        default=(),
        metadata=_opt(
            header_table,
            'Headers sent with every request: `{ Accept-Language = "en" }`. A value can be '
            '`{ env = "NAME" }` or `{ file = "PATH" }`, read at start, for a token that must '
            "not sit in config.toml. A URL's `rules` and a spider's request override them "
            "(request > rule > these); the crawl's own (`Host`, `Connection`, ...) cannot be "
            "set. Values are never stored or shown.",
            shown="{}",
            kind="table of header name = value",
            secret=True,
        ),
    )
    cookies: bool = field(
        default=True,
        metadata=_opt(
            boolean,
            "Keep the cookies sites set, a jar per host (a site's cookies never go to another "
            "host), and send them back by the usual rules (path, expiry, Secure). The jars are "
            "stored with the crawl (a resume, or another process of a fleet taking a host "
            "over, carries on with them).",
        ),
    )
    proxies: tuple[str, ...] = field(
        default=(),
        metadata=_opt(
            list_of(proxy_url),
            'Forward proxies every request goes through: `["http://user:pass@proxy:3128", '
            '"https://proxy2:8443"]` (the credentials, if any, go to the proxy only, in '
            "`Proxy-Authorization`; they are never stored or shown). [] = none.",
            secret=True,
        ),
    )
    proxies_file: str = field(
        default="",
        metadata=_opt(
            str_or_empty,
            "A file of proxy URLs, one a line (blank lines and # comments skipped), added to "
            "`proxies`: keeps their credentials out of config.toml.",
        ),
    )
    proxy_strategy: str = field(
        default="round_robin",
        metadata=_opt(
            choice("round_robin", "per_host", "sticky"),
            'Which proxy a request takes: `"round_robin"` (the next in turn), `"per_host"` (one '
            'per host, by a hash of its name), `"sticky"` (the same until it fails). A proxy '
            "that fails is benched and the request goes through the next.",
        ),
    )
    proxy_bench: float = field(
        default=60.0,
        metadata=_opt(
            number(0),
            "Seconds a proxy that failed (refused, a timeout connecting, 407) is left out.",
        ),
    )
    sessions: bool = field(
        default=False,
        metadata=_opt(
            boolean,
            "Sessions: a response whose status is in `blocked_status` retires the host's "
            "session (its cookies emptied, the next proxy) and the request is tried again, "
            "within `retries`. A 429 or 503 never retires one (it slows the host instead).",
        ),
    )
    blocked_status: tuple[int, ...] = field(
        default=(401, 403),
        metadata=_opt(
            list_of(integer(400, 499)),
            "With `sessions`, the statuses that say a session is blocked.",
            kind="list of integers",
        ),
    )
    rules: tuple[HeaderRule, ...] = field(
        default=(),
        metadata=_opt(
            header_rules,
            'Headers for some URLs: `[{ url = "https://api.example.com/*", headers = { ... } '
            "}]` (`url`: a glob or a list of globs, `*` matching `/` too). Every matching rule "
            "applies, a later one winning a header given twice, over `headers`.",
            shown="[]",
            kind="list of tables: url, headers",
            secret=True,
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ParseConfig:
    """How pages are parsed: the worker processes, their limits, the visible text."""

    workers: int = field(
        default_factory=lambda: auto_workers(usable_cpus()),
        metadata=_opt(
            worker_count,
            'Parser processes: `"auto"` = one per CPU this process may use (taskset, cpusets '
            "and a cgroup CPU quota count), minus one from three CPUs up, for the event loop; "
            "or a number ≥ 1. `0` = none: parse inline on the event-loop thread, which stands "
            "still ~0.5 ms per 40 KB page and where no time limit applies (tiny or trusted "
            "sites, tests, 1-CPU machines).",
            shown='"auto"',
            kind='"auto" or an integer ≥ 0',
        ),
    )
    text: TextMode = field(
        default="hash",
        metadata=_opt(
            choice("hash", "store", "off"),
            'The visible text: `"hash"` keeps its length and hash (`pages.text_length`, '
            '`text_hash`: what `duplicates` compares), `"store"` the text itself too '
            '(`pages.text`), `"off"` none of them (no text pass; no duplicates by text).',
        ),
    )
    # The key before `text`: true means text = "store", and stays true exactly then.
    store_text: bool = field(
        default=False,
        metadata=_opt(
            boolean,
            'The older name of `text = "store"`: `true` means that (and contradicts '
            '`text = "off"`); it reads `true` exactly when the text is stored.',
        ),
    )
    timeout: float = field(
        default=30.0,
        metadata=_opt(
            number(0, exclusive=True),
            "Seconds of CPU a worker may spend on one page (or sitemap, or scope decision): past "
            "them the worker is ended and replaced, and the page stored with "
            "`error_kind = 'parse'`; the crawl goes on. No limit with `workers = 0`.",
        ),
    )
    # A backtracking pattern can take minutes on one value; past this the field alone is lost
    # (null, named in pages.field_errors), not the page. Well-behaved patterns take microseconds.
    regex_timeout: float = field(
        default=0.1,
        metadata=_opt(
            number(0, exclusive=True),
            "Seconds an `[extract]` rule's regex may take on one value (the `regex` package "
            "stops it inside the match): past them that field is `null` on that page and "
            "named, with why, in `pages.field_errors`; the page, its links and its other "
            "fields are kept.",
        ),
    )
    # How far the workers yield the CPU to the crawler's own event loop when both want it: at
    # the same niceness a busy loop waited for a core 1.2-5 s of a 6-10 s crawl (cpu case).
    nice: int = field(
        default=10,
        metadata=_opt(
            integer(0, 19),
            "Niceness added to the parser processes (0–19), so they yield the CPU to the event "
            "loop when both want it; `0` = the crawler's own priority. Needs no privileges.",
        ),
    )

    def __post_init__(self) -> None:
        if self.store_text:
            if self.text == "off":
                raise ConfigError(
                    'parse.store_text = true contradicts parse.text = "off"; '
                    'keep parse.text = "store" alone'
                )
            object.__setattr__(self, "text", "store")
        object.__setattr__(self, "store_text", self.text == "store")


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """Where results go, and how they are committed."""

    db: str = field(
        default="data/crawl.db",
        metadata=_opt(
            text,
            "The results: a SQLite file's path (its folder is created), or a PostgreSQL URL "
            "`postgresql://user@host:port/dbname` (the password from `PGPASSWORD` or "
            "`~/.pgpass`). `--db` sets it.",
        ),
    )
    batch_size: int = field(default=200, metadata=_opt(integer(1), "Pages per write transaction."))
    flush_interval: float = field(
        default=1.0,
        metadata=_opt(
            number(0, exclusive=True),
            "The longest, in seconds, a parsed page waits to be committed.",
        ),
    )
    # PostgreSQL with several processes on one crawl: how long a host's lease lasts unrenewed
    # (a dead process's hosts wait this long). It must outlast a request's longest time
    # (crawl/leases.py request_margin), checked when a crawl starts.
    lease_ttl: float = field(
        default=600.0,
        metadata=_opt(
            number(0, exclusive=True),
            "PostgreSQL, several processes on one crawl: seconds a host's lease lasts "
            "unrenewed, so how long a dead process's hosts wait for another. It must exceed a "
            "request's longest time (`fetch.total_timeout` × (1 + `fetch.retries`) plus the "
            "waits between attempts) by a sixth, or the crawl refuses to start.",
        ),
    )
    warc: str = field(
        default="",
        metadata=_opt(
            str_or_empty,
            "A folder to archive every fetch into as WARC 1.1 files (ISO 28500): a request and "
            "a response record for each page, robots.txt and sitemap, bodies exactly as "
            "received, a revisit record for a 304 (see the Archiving guide). Created if missing; "
            "`--warc` sets it. Empty: no archive.",
        ),
    )
    warc_max_size: int = field(
        default=1_000_000_000,
        metadata=_opt(
            integer(1),
            "Bytes a WARC file may reach before the next record starts a new file (a record "
            "bigger than that has a file of its own).",
        ),
    )
    warc_redact_auth: bool = field(
        default=True,
        metadata=_opt(
            boolean,
            "Write the values of the `Authorization` and `Cookie` request headers to the WARC "
            'request records as "[redacted]" (false: as sent, which replaying a login-only '
            "site needs). `Proxy-Authorization` is always redacted.",
        ),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """The progress log, off a terminal."""

    interval: float = field(
        default=5.0,
        metadata=_opt(
            number(0, exclusive=True),
            "Off a terminal (CI, a pipe, `nohup`), seconds between two plain progress lines, "
            "logged at any `--log-level`.",
        ),
    )


SECTIONS: dict[str, type] = {
    "crawl": CrawlConfig,
    "fetch": FetchConfig,
    "parse": ParseConfig,
    "storage": StorageConfig,
    "log": LogConfig,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    crawl: CrawlConfig = field(default_factory=CrawlConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    parse: ParseConfig = field(default_factory=ParseConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    log: LogConfig = field(default_factory=LogConfig)
    extract: Extraction = field(default_factory=Extraction)
    auth: tuple[AuthEntry, ...] = ()  # [[auth]]: logins, their passwords named, never held

    def to_json(self) -> str:
        """The configuration as the crawl's row keeps it, with no secret: header values are
        hidden (a token may be written there), passwords are only named."""
        fetch = dataclasses.replace(
            self.fetch,
            headers=_hidden(self.fetch.headers),
            rules=tuple(
                dataclasses.replace(rule, headers=_hidden(rule.headers))
                for rule in self.fetch.rules
            ),
        )
        fetch = dataclasses.replace(
            fetch, proxies=tuple(hide_credentials(url) for url in fetch.proxies)
        )
        shown = dataclasses.replace(self, fetch=fetch)
        return json.dumps(dataclasses.asdict(shown), sort_keys=True)


def _hidden(headers: tuple[tuple[str, HeaderValue], ...]) -> tuple[tuple[str, HeaderValue], ...]:
    return tuple((name, HIDDEN) for name, _ in headers)
