"""config.toml → typed, frozen objects, one per section.

The file is read once, at the edge (the CLI); every stage receives only its own section. Every value
is checked before any request is made: a bad one raises ConfigError with one line naming the key,
the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selectolax.lexbor import LexborHTMLParser, SelectolaxError

from scraper.errors import ConfigError
from scraper.models import Extraction, ExtractRule, RuleSet, TextMode
from scraper.urls import Scope, UrlPolicy, canonicalize, host_of


class _Invalid(Exception):
    """A value failed its check; the message says what is allowed."""


Check = Callable[[Any], Any]


def _int(minimum: int | None = None) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid("must be an integer")
        if minimum is not None and value < minimum:
            raise _Invalid(f"must be an integer ≥ {minimum}")
        return value

    return check


def _float(minimum: float = 0.0, *, exclusive: bool = False) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid("must be a number (seconds)")
        if value < minimum or (exclusive and value == minimum):
            raise _Invalid(f"must be a number {'>' if exclusive else '≥'} {minimum:g}")
        return float(value)

    return check


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("must be a non-empty string")
    return value


def _list_of(item: Check) -> Check:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Invalid('must be a list, e.g. ["..."]')
        return tuple(item(v) for v in value)

    return check


def _seed(value: Any) -> str:
    url = canonicalize(value) if isinstance(value, str) else None
    if url is None or "://" not in value:
        raise _Invalid(f"{json.dumps(value)} is not an http(s) URL")
    return url


@functools.cache  # read once per process: config objects are built inside coroutines too
def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may use, not all the machine has: those it may run on (taskset,
    cgroup cpusets), and no more than its cgroup's CPU quota (a container's `--cpus`)."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0)) or 1
    else:
        cpus = os.cpu_count() or 1
    try:
        quota = quota_cpus(cpu_max.read_text())
    except OSError:
        quota = None  # no cgroup v2 here, or not readable: no quota we can see
    return min(cpus, quota) if quota else cpus


def quota_cpus(cpu_max: str) -> int | None:
    """CPUs allowed by a cgroup v2 `cpu.max` ("200000 100000": 2; "150000 100000": 2, rounded
    up; "max 100000": no quota, None)."""
    fields = cpu_max.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return max(1, -(-quota // period)) if quota > 0 and period > 0 else None


def auto_workers(cpus: int) -> int:
    """`parse.workers = "auto"`: the CPUs minus what the event loop needs.

    At full speed the loop takes about a third of the crawl's CPU (README, Benchmarks): up to a
    core of its own. With three CPUs or more, one is left to it, so the workers never crowd it
    out; with one or two, a worker per CPU is faster (two workers and the loop on two CPUs:
    1655 pages/s against 1470 with one worker), the loop taking its share of both."""
    return cpus - 1 if cpus >= 3 else max(cpus, 1)


def _domain(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or "/" in value or " " in value:
        raise _Invalid(f"{json.dumps(value)} is not a host name (like example.com)")
    return value.strip().lower().lstrip(".")


def _workers(value: Any) -> int:
    """Parser processes; 0 parses on the event-loop thread (see ParsePool)."""
    if value == "auto":
        return auto_workers(usable_cpus())
    try:
        return _int(0)(value)
    except _Invalid:
        raise _Invalid('must be "auto", 0 (parse inline, no processes) or an integer ≥ 1') from None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> float:
    """Seconds, as a number or a string such as "90s", "30m", "12h", "7d"."""
    if isinstance(value, str) and value[-1:] in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        return float(value[:-1]) * _UNITS[value[-1]]
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise _Invalid('must be a duration: seconds, or a string like "30m", "12h", "7d"')


def _regex(value: Any) -> str:
    text = _text(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise _Invalid(f"{json.dumps(text)} is not a valid regex: {exc}") from None
    return text


def _file_extension(value: Any) -> str:
    return _text(value).strip().lstrip(".").lower()


def _choice(*choices: str) -> Check:
    def check(value: Any) -> str:
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(json.dumps(c) for c in choices)}")
        return str(value)

    return check


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


def _opt(check: Check, doc: str) -> dict[str, Any]:
    return {"check": check, "doc": doc}


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlConfig:
    seeds: tuple[str, ...] = field(default=(), metadata=_opt(_list_of(_seed), "start URLs"))
    allowed_domains: tuple[str, ...] = field(
        default=(), metadata=_opt(_list_of(_domain), "hosts to stay on; [] = the seeds' hosts")
    )
    max_depth: int = field(default=0, metadata=_opt(_int(0), "link depth; 0 = no limit"))
    max_pages: int = field(default=0, metadata=_opt(_int(0), "pages to fetch; 0 = no limit"))
    max_pages_per_host: int = field(default=0, metadata=_opt(_int(0), "0 = no limit"))
    obey_robots: bool = field(default=True, metadata=_opt(_bool, "honour robots.txt"))
    sitemaps: bool = field(default=True, metadata=_opt(_bool, "read sitemaps"))
    queue_size: int = field(default=1000, metadata=_opt(_int(1), "URLs leased into memory"))
    shutdown_grace: float = field(default=10.0, metadata=_opt(_float(0), "seconds"))
    recrawl_after: float = field(default=0.0, metadata=_opt(_duration, "0 = always"))
    denied_domains: tuple[str, ...] = field(default=(), metadata=_opt(_list_of(_domain), ""))
    include_subdomains: bool = field(default=True, metadata=_opt(_bool, ""))
    include: tuple[str, ...] = field(default=(), metadata=_opt(_list_of(_regex), "regexes"))
    exclude: tuple[str, ...] = field(default=(), metadata=_opt(_list_of(_regex), "regexes"))
    skip_extensions: tuple[str, ...] = field(
        default=SKIP_EXTENSIONS, metadata=_opt(_list_of(_file_extension), "")
    )
    query: str = field(default="keep", metadata=_opt(_choice("keep", "sort", "drop"), ""))
    drop_params: tuple[str, ...] = field(
        default=("utm_*", "fbclid", "gclid"), metadata=_opt(_list_of(_text), "globs")
    )

    def __post_init__(self) -> None:
        policy = self.url_policy()
        seeds = tuple(canonicalize(seed, policy=policy) or seed for seed in self.seeds)
        object.__setattr__(self, "seeds", seeds)
        if not self.allowed_domains and self.seeds:
            domains = tuple(dict.fromkeys(host_of(seed) for seed in self.seeds))
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
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchConfig:
    concurrency: int = field(default=16, metadata=_opt(_int(1), "requests in flight"))
    per_host_concurrency: int = field(default=8, metadata=_opt(_int(1), "per host"))
    per_host_delay: float = field(default=0.0, metadata=_opt(_float(0), "between starts"))
    autothrottle: bool = field(default=True, metadata=_opt(_bool, "adapt per host"))
    robots_timeout: float = field(default=10.0, metadata=_opt(_float(0, exclusive=True), ""))
    user_agent: str = field(
        default="scraper/0.1 (+set fetch.user_agent to a way to reach you)",
        metadata=_opt(_text, "User-Agent header"),
    )
    connect_timeout: float = field(default=10.0, metadata=_opt(_float(0, exclusive=True), ""))
    read_timeout: float = field(default=30.0, metadata=_opt(_float(0, exclusive=True), ""))
    total_timeout: float = field(default=60.0, metadata=_opt(_float(0, exclusive=True), ""))
    max_bytes: int = field(default=10 * 1024 * 1024, metadata=_opt(_int(1), "body size cap"))
    max_redirects: int = field(default=10, metadata=_opt(_int(0), "redirect hops"))
    retries: int = field(default=2, metadata=_opt(_int(0), "retries after the first attempt"))
    retry_backoff: float = field(default=0.5, metadata=_opt(_float(0), "first backoff"))
    retry_backoff_max: float = field(default=30.0, metadata=_opt(_float(0), "backoff cap"))
    max_retry_after: float = field(default=60.0, metadata=_opt(_float(0), "Retry-After cap"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ParseConfig:
    workers: int = field(
        default_factory=lambda: auto_workers(usable_cpus()), metadata=_opt(_workers, "")
    )
    text: TextMode = field(
        default="hash",
        metadata=_opt(_choice("hash", "store", "off"), "the visible text: its hash, kept, or none"),
    )
    # The key before `text`: true means text = "store", and stays true exactly then.
    store_text: bool = field(default=False, metadata=_opt(_bool, 'the same as text = "store"'))

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
    db: str = field(default="data/crawl.db", metadata=_opt(_text, "SQLite file"))
    batch_size: int = field(default=200, metadata=_opt(_int(1), "rows per transaction"))
    flush_interval: float = field(
        default=1.0, metadata=_opt(_float(0, exclusive=True), "seconds between commits")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    interval: float = field(
        default=5.0,
        metadata=_opt(_float(0, exclusive=True), "seconds between progress lines off a terminal"),
    )


SECTIONS: dict[str, type] = {
    "crawl": CrawlConfig,
    "fetch": FetchConfig,
    "parse": ParseConfig,
    "storage": StorageConfig,
    "log": LogConfig,
}
EXTRACT_KEYS = ("css", "take", "attr", "all", "regex")
TAKES = ("text", "html", "attr")
RULE_SETS = "for"  # [[extract.for]]: rule sets for the pages whose URL matches `url`


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


def load_config(
    path: Path | None = None,
    *,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
) -> Config:
    """Read `path` (None: defaults only), apply `--set` overrides, then `values` ("section.key" →
    value, e.g. seeds and shortcuts from the command line), and check everything."""
    raw = _read_toml(path) if path is not None else {}
    for item in overrides:
        key, value = _parse_override(item)
        _assign(raw, key, value)
    for key, value in (values or {}).items():
        _assign(raw, key, value)
    return build_config(raw)


def build_config(raw: Mapping[str, Any]) -> Config:
    known = [*SECTIONS, "extract"]
    for name, table in raw.items():
        if name not in known:
            raise ConfigError(f"[{name}]: unknown section{_suggest(name, known)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: must be a table ([{name}])")
    sections = {
        name: _build_section(name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()
    }
    return Config(**sections, extract=_build_extraction(raw.get("extract", {})))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. fetch.concurrency=32")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word such as data/x.db: take it as the string it obviously is
    return key, value


def _assign(raw: dict[str, Any], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    table = raw.setdefault(section, {})
    if isinstance(table, dict):
        table[key] = value


def _build_section(name: str, cls: type, table: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"{name}.{key}: unknown key{_suggest(key, fields, prefix=name)}")
        try:
            kwargs[key] = fields[key].metadata["check"](value)
        except _Invalid as exc:
            raise ConfigError(f"{name}.{key} = {_show(value)}: {exc}") from None
    return cls(**kwargs)


def _build_extraction(table: Mapping[str, Any]) -> Extraction:
    """`name = rule` pairs apply to every page; `[[extract.for]]` tables are rule sets, each with
    `url` (a glob or a list of globs) and its own `name = rule` pairs."""
    every: list[ExtractRule] = []
    sets: list[RuleSet] = []
    for name, spec in table.items():
        if name == RULE_SETS and isinstance(spec, list):
            sets = [_build_rule_set(f"extract.for[{n}]", item) for n, item in enumerate(spec, 1)]
        else:
            every.append(_build_rule(f"extract.{name}", name, spec))
    return Extraction(every=tuple(every), sets=tuple(sets))


def _build_rule_set(where: str, spec: Any) -> RuleSet:
    if not isinstance(spec, dict):
        raise ConfigError(f'{where}: must be a table ([[extract.for]] with url = "...")')
    urls = spec.get("url")
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
        raise ConfigError(
            f'{where}: needs url = "<glob>" (or a list of them), e.g. url = "*/product/*"'
        )
    rules = tuple(
        _build_rule(f"{where}.{name}", name, rule) for name, rule in spec.items() if name != "url"
    )
    if not rules:
        raise ConfigError(f'{where}: has no fields; add some, e.g. price = "p.price"')
    return RuleSet(urls=tuple(urls), rules=rules)


def _build_rule(where: str, name: str, spec: Any) -> ExtractRule:
    if isinstance(spec, str):
        spec = {"css": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f'{where}: must be a CSS selector string or a table {{ css = "..." }}')
    for key in spec:
        if key not in EXTRACT_KEYS:
            raise ConfigError(f"{where}.{key}: unknown key{_suggest(key, EXTRACT_KEYS, where)}")
    css = spec.get("css")
    if not isinstance(css, str) or not css.strip():
        raise ConfigError(f'{where}: needs css = "<selector>"')
    attr = spec.get("attr")
    take = spec.get("take", "attr" if attr is not None else "text")
    if take not in TAKES:
        raise ConfigError(f"{where}.take = {_show(take)}: must be one of {', '.join(TAKES)}")
    if take == "attr" and (not isinstance(attr, str) or not attr):
        raise ConfigError(f'{where}: take = "attr" needs attr = "<attribute name>"')
    every = spec.get("all", False)
    if not isinstance(every, bool):
        raise ConfigError(f"{where}.all = {_show(every)}: must be true or false")
    regex = spec.get("regex")
    if regex is not None:
        _check_regex(where, regex)
    _check_selector(where, css)
    return ExtractRule(name=name, css=css, take=take, attr=attr, all=every, regex=regex)


def _check_regex(where: str, regex: Any) -> None:
    if not isinstance(regex, str) or not regex:
        raise ConfigError(f"{where}.regex = {_show(regex)}: must be a regular expression string")
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"{where}: regex {regex!r} does not compile: {exc}") from None
    if compiled.groups > 1:
        raise ConfigError(
            f"{where}: regex {regex!r} has {compiled.groups} groups; use at most one "
            "(its match is the value), or (?:...) for the others"
        )


def _check_selector(where: str, css: str) -> None:
    try:
        LexborHTMLParser("<html></html>").css(css)
    except (SelectolaxError, ValueError) as exc:
        raise ConfigError(f"{where}: CSS selector {css!r} does not compile: {exc}") from None


def _suggest(word: str, choices: Any, prefix: str = "") -> str:
    match = difflib.get_close_matches(word, list(choices), n=1)
    if not match:
        return f" (known: {', '.join(choices)})"
    return f" (did you mean {prefix + '.' if prefix else ''}{match[0]}?)"


def _show(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)
