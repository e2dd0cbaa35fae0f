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
from scraper.errors import ConfigError
from scraper.models import Extraction, TextMode
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


def _opt(check: Check, doc: str) -> dict[str, object]:
    return {"check": check, "doc": doc}


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlConfig:
    seeds: tuple[str, ...] = field(default=(), metadata=_opt(list_of(seed), "start URLs"))
    seeds_file: str = field(
        default="", metadata=_opt(str_or_empty, 'a file of start URLs, one a line ("-": stdin)')
    )
    allowed_domains: tuple[str, ...] = field(
        default=(), metadata=_opt(list_of(domain), "hosts to stay on; [] = the seeds' hosts")
    )
    max_depth: int = field(default=0, metadata=_opt(integer(0), "link depth; 0 = no limit"))
    max_pages: int = field(default=0, metadata=_opt(integer(0), "pages to fetch; 0 = no limit"))
    max_pages_per_host: int = field(default=0, metadata=_opt(integer(0), "0 = no limit"))
    obey_robots: bool = field(default=True, metadata=_opt(boolean, "honour robots.txt"))
    sitemaps: bool = field(default=True, metadata=_opt(boolean, "read sitemaps"))
    queue_size: int = field(default=1000, metadata=_opt(integer(1), "URLs leased into memory"))
    shutdown_grace: float = field(default=10.0, metadata=_opt(number(0), "seconds"))
    recrawl_after: float = field(default=0.0, metadata=_opt(duration, "0 = always"))
    denied_domains: tuple[str, ...] = field(default=(), metadata=_opt(list_of(domain), ""))
    include_subdomains: bool = field(default=True, metadata=_opt(boolean, ""))
    include: tuple[str, ...] = field(default=(), metadata=_opt(list_of(regex), "regexes"))
    exclude: tuple[str, ...] = field(default=(), metadata=_opt(list_of(regex), "regexes"))
    skip_extensions: tuple[str, ...] = field(
        default=SKIP_EXTENSIONS, metadata=_opt(list_of(file_extension), "")
    )
    query: str = field(default="keep", metadata=_opt(choice("keep", "sort", "drop"), ""))
    drop_params: tuple[str, ...] = field(
        default=("utm_*", "fbclid", "gclid"), metadata=_opt(list_of(text), "globs")
    )
    max_links_per_page: int = field(
        default=5000, metadata=_opt(integer(0), "links kept per page; 0 = all")
    )
    max_url_length: int = field(
        default=2083, metadata=_opt(integer(0), "longer URLs are dropped; 0 = any length")
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
    concurrency: int = field(default=16, metadata=_opt(integer(1), "requests in flight"))
    per_host_concurrency: int = field(default=8, metadata=_opt(integer(1), "per host"))
    per_host_delay: float = field(default=0.0, metadata=_opt(number(0), "between starts"))
    autothrottle: bool = field(default=True, metadata=_opt(boolean, "adapt per host"))
    robots_timeout: float = field(default=10.0, metadata=_opt(number(0, exclusive=True), ""))
    user_agent: str = field(
        default="scraper/0.1 (+set fetch.user_agent to a way to reach you)",
        metadata=_opt(text, "User-Agent header"),
    )
    connect_timeout: float = field(default=10.0, metadata=_opt(number(0, exclusive=True), ""))
    read_timeout: float = field(default=30.0, metadata=_opt(number(0, exclusive=True), ""))
    total_timeout: float = field(default=60.0, metadata=_opt(number(0, exclusive=True), ""))
    max_bytes: int = field(default=10 * 1024 * 1024, metadata=_opt(integer(1), "body size cap"))
    max_redirects: int = field(default=10, metadata=_opt(integer(0), "redirect hops"))
    retries: int = field(default=2, metadata=_opt(integer(0), "retries after the first attempt"))
    retry_backoff: float = field(default=0.5, metadata=_opt(number(0), "first backoff"))
    retry_backoff_max: float = field(default=30.0, metadata=_opt(number(0), "backoff cap"))
    max_retry_after: float = field(default=60.0, metadata=_opt(number(0), "Retry-After cap"))
    politeness_key: str = field(
        default="host", metadata=_opt(choice("host", "domain", "ip"), "what limits apply to")
    )
    dns_ttl: float = field(default=300.0, metadata=_opt(number(0), "seconds a name is cached"))
    resolve: tuple[tuple[str, str], ...] = field(
        default=(), metadata=_opt(addresses, "host names answered without DNS")
    )
    max_crawl_delay: float = field(
        default=30.0, metadata=_opt(number(0), "hosts asking a longer Crawl-delay are skipped")
    )
    block_private: bool = field(
        default=True, metadata=_opt(boolean, "no requests to private addresses but the seeds'")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ParseConfig:
    workers: int = field(
        default_factory=lambda: auto_workers(usable_cpus()), metadata=_opt(worker_count, "")
    )
    text: TextMode = field(
        default="hash",
        metadata=_opt(choice("hash", "store", "off"), "the visible text: its hash, kept, or none"),
    )
    # The key before `text`: true means text = "store", and stays true exactly then.
    store_text: bool = field(default=False, metadata=_opt(boolean, 'the same as text = "store"'))
    timeout: float = field(
        default=30.0, metadata=_opt(number(0, exclusive=True), "seconds per page in a worker")
    )
    # A backtracking pattern can take minutes on one value; past this the field alone is lost
    # (null, named in pages.field_errors), not the page. Well-behaved patterns take microseconds.
    regex_timeout: float = field(
        default=0.1,
        metadata=_opt(number(0, exclusive=True), "seconds an [extract] regex has per value"),
    )
    # How far the workers yield the CPU to the crawler's own event loop when both want it: at
    # the same niceness a busy loop waited for a core 1.2-5 s of a 6-10 s crawl (cpu case).
    nice: int = field(default=10, metadata=_opt(integer(0, 19), "niceness added to the workers"))

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
    db: str = field(default="data/crawl.db", metadata=_opt(text, "SQLite file or PostgreSQL URL"))
    batch_size: int = field(default=200, metadata=_opt(integer(1), "rows per transaction"))
    flush_interval: float = field(
        default=1.0, metadata=_opt(number(0, exclusive=True), "seconds between commits")
    )
    # PostgreSQL with several processes on one crawl: how long a host's lease lasts unrenewed
    # (a dead process's hosts wait this long). It must outlast a request's longest time
    # (crawl/leases.py request_margin), checked when a crawl starts.
    lease_ttl: float = field(
        default=600.0, metadata=_opt(number(0, exclusive=True), "seconds a host lease lasts")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    interval: float = field(
        default=5.0,
        metadata=_opt(number(0, exclusive=True), "seconds between progress lines off a terminal"),
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

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)
