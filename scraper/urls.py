"""URLs as a browser resolves them, in the one spelling the crawl keeps; and the crawl's scope.
Pure functions: the parser uses them in its own process."""

from __future__ import annotations

import fnmatch
import functools
import itertools
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

import ada_url

from scraper.domains import registrable_domain
from scraper.picklable import pickled_as_arguments

CRAWLABLE_SCHEMES = frozenset({"http", "https"})


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class UrlPolicy:
    """What canonicalisation does to query strings (crawl.query, crawl.drop_params)."""

    query: str = "keep"  # keep | sort | drop
    drop_params: tuple[str, ...] = ()  # parameter names to remove (globs such as utm_*)


KEEP_QUERY = UrlPolicy()


def canonicalize(url: str, base: str | None = None, policy: UrlPolicy = KEEP_QUERY) -> str | None:
    """The canonical form of `url` (resolved against `base`), or None if it is not crawlable.

    Resolved and parsed as a browser does, by the WHATWG URL standard (ada-url): whitespace
    trimmed, tabs and line breaks removed, a backslash a slash in http(s), `https:x` from an
    http page another site, scheme and host lower-cased, IDN hosts mapped (invisible characters
    dropped) and turned into punycode, numbers in any spelling made dotted IPv4 addresses, IPv6
    addresses checked and compressed, the default port and dot segments removed, characters
    percent-encoded as a browser sends them. Then our own changes (`_canonical`), so each page
    has one spelling. Schemes other than http(s) (mailto:, javascript:, data:, tel:, file:, ...)
    and what a browser cannot parse give None.
    """
    try:
        href = _parsed(url, base)
    except ValueError:  # no URL to a browser either, or a lone surrogate (UTF-8 has none)
        try:
            href = _parsed(_scalar_values(url), base and _scalar_values(base))
        except ValueError:
            return None
    return _canonical(href, policy)


def _parsed(url: str, base: str | None) -> str:
    """The URL as the standard serialises it; ValueError if there is none."""
    return ada_url.join_url(base, url) if base is not None else ada_url.normalize_url(url)


def _scalar_values(text: str) -> str:
    """`text` with each lone surrogate as U+FFFD, as a browser reads a string into a URL (a pair
    of them is the one character it codes)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _canonical(href: str, policy: UrlPolicy) -> str | None:
    """Our changes to a URL as the WHATWG standard serialises it, on purpose, and nothing more:
    no fragment (never sent); no user name or password (never sent, stored or shown); a host
    that is a DNS name (letters, digits, "-" and "_" in non-empty labels) or an IP address, or
    no URL, and no trailing dot (as crawl.denied_domains names it); escapes of unreserved
    characters in the path decoded and the others' hex upper case (RFC 3986 6.2.2: the same
    resource to a server, one spelling to us); an empty query is none; and the query policy.
    Slicing, not parsing, is safe here: in a serialised http(s) URL the userinfo, path and
    query escape "/", "?", "#" and "@" where they would read as delimiters, and the path is never
    empty."""
    scheme_end = href.find("://")
    if href[:scheme_end] not in CRAWLABLE_SCHEMES:
        return None
    start = scheme_end + 3
    href = href.partition("#")[0]
    path_start = href.find("/", start)
    authority = href[start:path_start]
    # Remembered for the hosts a page's links share (~1 µs each, 0.1 remembered); not for longer
    # ones, which no DNS name is, so that a page of long hosts cannot fill memory.
    host = _remembered_host(authority) if len(authority) <= 300 else _canonical_host(authority)
    if host is None:
        return None
    path, _, query = href[path_start:].partition("?")
    if "%" in path:
        path = _ESCAPE.sub(_normal_escape, path)
    if query:
        query = _apply_query_policy(query, policy)
    return f"{href[:start]}{host}{path}?{query}" if query else f"{href[:start]}{host}{path}"


# A host name as DNS and the resolver take it, once the URL parser has lower-cased it and mapped an
# IDN to punycode: letters, digits, "-" and "_" (which some real hosts have), in non-empty labels.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def _canonical_host(authority: str) -> str | None:
    """The host and port of a serialised authority as the crawl's rules and the resolver should
    both see them, or None if the host is no host name.

    The standard lets a host be almost anything but a few delimiters (`a"b`, `a..b`, `a!b`):
    such a host no resolver looks up, and a link to it is no link (nor a row whose host an
    escape sequence could spell on a terminal). A trailing dot is dropped ("example.com." is
    "example.com", which crawl.denied_domains names). IPv4 addresses come dotted and IPv6 ones
    compressed from the parser."""
    host_port = authority.rpartition("@")[2]  # the last "@": one in the userinfo is escaped
    if host_port[:1] == "[":
        return host_port
    host, colon, port = host_port.partition(":")
    if host[-1:] == ".":
        host = host[:-1]
    if not _HOST_NAME.fullmatch(host):
        return None
    return f"{host}:{port}" if colon else host


_remembered_host = functools.lru_cache(maxsize=4096)(_canonical_host)
_ESCAPE = re.compile("%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normal_escape(match: re.Match[str]) -> str:
    """ "%41" is "A", "%2f" is "%2F". (A "." decoded makes no dot segment: the parser has removed
    every segment that was "." or ".." in any escape.)"""
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0).upper()


def _apply_query_policy(query: str, policy: UrlPolicy) -> str:
    """The query (without its "?") as crawl.query and crawl.drop_params want it. Only what the
    policy removes or moves changes: each remaining `&`-separated parameter keeps its bytes, so
    the server gets what the page wrote (`?b` stays `?b`, not `?b=`)."""
    if policy.query == "drop":
        return ""
    if policy.query == "keep" and not policy.drop_params:
        return query
    params = query.split("&")
    if policy.drop_params:
        dropped = _dropped_names(policy.drop_params)
        params = [param for param in params if not dropped.match(_param_name(param))]
    if policy.query == "sort":  # by name then value, as decoded; empty ones are no parameters
        params = sorted(filter(None, params), key=_decoded_pair)
    return "&".join(params)


@functools.lru_cache(maxsize=8)  # one policy per crawl
def _dropped_names(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """crawl.drop_params's globs as one regex (fnmatchcase's rules: case matters)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in patterns))


def _param_name(param: str) -> str:
    """A parameter's name as a server reads it (application/x-www-form-urlencoded)."""
    name = param.partition("=")[0]
    return unquote_plus(name) if "%" in name or "+" in name else name


def _decoded_pair(param: str) -> tuple[str, str]:
    name, _, value = param.partition("=")
    return unquote_plus(name), unquote_plus(value)


def resolve_links(
    hrefs: Iterable[str], base: str, policy: UrlPolicy = KEEP_QUERY, scope: Scope | None = None
) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """(links, follow, cut) of a page: its hrefs canonical (`canonicalize` against `base`),
    without the uncrawlable ones, each once, in document order; those of them `scope` allows
    (depth aside; all of them with no scope); and how many were cut: longer than the scope's
    max_url_length, or past its max_links (neither kept as links nor followed). `base` must be
    canonical, as page URLs and resolved `<base href>`s are.

    A site's pages repeat their links (menus, footers), and canonicalising and scoping one
    costs a few µs where looking it up costs a tenth of one, so each answer is remembered for
    the process's life (`_MEMO`, bounded).
    """
    found: dict[str, bool] = {}
    for url, allowed in resolve_each(hrefs, base, policy, scope):
        if url is not None:
            found[url] = allowed
    cut = 0
    if scope is not None and (scope.max_links or scope.max_url_length):
        found, cut = _bounded(found, scope.max_links, scope.max_url_length)
    return tuple(found), tuple(url for url, allowed in found.items() if allowed), cut


def resolve_each(
    hrefs: Iterable[str], base: str, policy: UrlPolicy = KEEP_QUERY, scope: Scope | None = None
) -> Iterator[tuple[str | None, bool]]:
    """For each href, in order: its canonical URL against `base` (None: not crawlable) and
    whether `scope` allows it (depth aside), remembered as `resolve_links` remembers them (a
    spider's requests are resolved so: `spider/call.py`)."""
    by_origin, by_folder = _MEMO.tables(base, policy, scope)
    reachable: dict[str, bool] = {}  # scope.outside per origin: a page's links share a few
    for href in hrefs:
        key = href.partition("#")[0] if "#" in href else href  # "/x#a", "/x#b": one answer
        # Absolute http(s) URLs and paths from the root mean the same anywhere on the origin;
        # the rest at most anywhere in the folder. Only what `_rememberable` passes is stored.
        if key.startswith(("http://", "https://")) or (key[:1] == "/" and key[1:2] != "/"):
            table = by_origin
        else:
            table = by_folder
        answer = table.get(key)
        if answer is None:
            answer = _resolve(href, base, policy, scope, reachable)
            if _rememberable(key):
                _MEMO.remember(table, key, answer)
        yield answer


def _bounded(found: dict[str, bool], most: int, longest: int) -> tuple[dict[str, bool], int]:
    """`found` without URLs over `longest` characters, and then its first `most`; and how many
    were dropped. (Checked first without building anything: most pages lose none.)"""
    kept = found
    if longest and max(map(len, found), default=0) > longest:
        kept = {url: allowed for url, allowed in found.items() if len(url) <= longest}
    if most and len(kept) > most:
        kept = dict(itertools.islice(kept.items(), most))
    return kept, len(found) - len(kept)


def _rememberable(key: str) -> bool:
    """May the answer for an href (`key`: up to its fragment) be shared with other pages of the
    same origin (absolute http(s) URLs, "/x") or folder (the rest)?

    Not for those whose answer depends on more of the base, by the URL standard: "", "?q" and
    "#f" (the base's last segment and query matter to them), nor "http:" or "http:?q" on an
    http page, which are relative too: a scheme of ours is remembered only as "http://" or
    "https://". Nor for what the parser trims or removes before it looks (whitespace and control
    characters at either end, tabs and line breaks anywhere): " ?q" is "?q", and "x " is "x"
    alone but "x%20" before a "#f". Another scheme ("mailto:") is None anywhere.
    tests/test_urls.py checks the answers against `canonicalize`."""
    if len(key) > _LONGEST_REMEMBERED:
        return False
    first, last = key[:1], key[-1:]
    if first in "?#" or first <= " " or last <= " " or first.isspace() or last.isspace():
        return False  # (an empty key too: "" is in any string, and <= " ")
    if "\t" in key or "\n" in key or "\r" in key:
        return False
    scheme = _SCHEME.match(key)
    return (
        scheme is None
        or scheme.group(1).lower() not in CRAWLABLE_SCHEMES
        or key.startswith(("http://", "https://"))
    )


# Real hrefs are shorter; longer ones (which rarely repeat) would let a page of them fill the memo.
_LONGEST_REMEMBERED = 500
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")  # as the URL standard's scheme state reads one
_Answer = tuple[str | None, bool]  # (canonical URL or None, within the scope?)
_Table = dict[str, _Answer]


def _resolve(
    href: str, base: str, policy: UrlPolicy, scope: Scope | None, reachable: dict[str, bool]
) -> _Answer:
    url = canonicalize(href, base, policy)
    if url is None or scope is None:
        return url, url is not None
    origin = url[: url.find("/", url.index("//") + 2)]  # a canonical URL has no credentials
    within = reachable.get(origin)
    if within is None:
        within = reachable[origin] = scope.outside(url) is None
    return url, scope.allows(url, base=base, reachable=within)


class _LinkMemo:
    """The answers `resolve_links` remembers: one table per (origin or folder, policy, scope).
    Tables and answers count alike towards `limit` (a site of one folder per page makes a table
    per page); at the limit all are dropped at once, so a worker's memory stays flat, and a
    site's menus are back within a page or two."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self._tables: dict[tuple[str, UrlPolicy, Scope | None], _Table] = {}

    def tables(self, base: str, policy: UrlPolicy, scope: Scope | None) -> tuple[_Table, _Table]:
        if not base.startswith(("http://", "https://")):
            return {}, {}  # not a crawled page's URL: nothing worth sharing, fresh tables
        origin, folder = _origin_and_directory(base)
        return self._table((origin, policy, scope)), self._table((folder, policy, scope))

    def remember(self, table: _Table, key: str, answer: _Answer) -> None:
        self._make_room()
        table[key] = answer
        self._count += 1

    def _table(self, key: tuple[str, UrlPolicy, Scope | None]) -> _Table:
        table = self._tables.get(key)
        if table is None:
            self._make_room()
            table = self._tables[key] = {}
            self._count += 1
        return table

    def _make_room(self) -> None:
        if self._count >= self._limit:
            for table in self._tables.values():
                table.clear()  # a page's tables in hand stay usable, only empty
            self._tables.clear()
            self._count = 0


_MEMO = _LinkMemo(limit=50_000)  # ~10 MB per parse worker; at most ~150 MB of the longest keys


@functools.lru_cache(maxsize=64)  # called per page, with one base per page
def _origin_and_directory(base: str) -> tuple[str, str]:
    """ "http://h/d/p?q" → ("http://h", "http://h/d/"): what "/x" and "x" are resolved against."""
    start = base.index("//") + 2
    end = min((i for i in (base.find(c, start) for c in "/?#") if i >= 0), default=len(base))
    path_end = min((i for i in (base.find(c, start) for c in "?#") if i >= 0), default=len(base))
    last_slash = base.rfind("/", start, path_end)
    directory = base[: last_slash + 1] if last_slash >= 0 else base[:path_end] + "/"
    return base[:end], directory


_DEFAULT_PORTS = {"http": "80", "https": "443"}


def host_key(url: str) -> str:
    """Host and non-default port of a canonical URL: the unit of politeness (slots, delays,
    robots.txt). String slicing, not a parser: this runs for every link, and canonical URLs
    have one shape (scheme://[user@]host[:port]/...)."""
    start = url.index("//") + 2
    end = url.find("/", start)
    authority = url[start:] if end < 0 else url[start:end]
    return authority.rpartition("@")[2]


def host_of(url: str) -> str:
    """The host name alone of a canonical URL (what crawl.allowed_domains matches)."""
    key = host_key(url)
    if key.startswith("["):  # IPv6 literal
        return key[1 : key.index("]")]
    return key.rpartition(":")[0] if ":" in key else key


def origin(url: str) -> str:
    """ "http://h:81" of the canonical URL "http://h:81/x"."""
    return f"{url[: url.index(':')]}://{host_key(url)}"


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Scope:
    """Which canonical URLs a crawl may request, and which links it follows.

    The boundary (`outside`): the hosts of crawl.allowed_domains and not of denied_domains, each
    entry with its subdomains (include_subdomains) and, if it names one, only on its port. It
    holds for every request the crawl makes: pages, robots.txt, sitemaps, every redirect hop
    (the fetch stage asks it; `crawl/addresses.py` guards the addresses behind the names).
    Within it, `allows` chooses the links to follow: depth, file extensions, include and
    exclude regexes, URL length.

    Picklable: it travels with each parse job, so links are filtered in the parser's process.
    """

    allowed_domains: frozenset[str] | tuple[str, ...] = ()
    denied_domains: frozenset[str] | tuple[str, ...] = ()
    include_subdomains: bool = True
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()
    skip_extensions: frozenset[str] = field(default_factory=frozenset)
    max_depth: int = 0
    max_url_length: int = 0  # longer URLs are not followed (nor kept as links); 0: any length
    max_links: int = 0  # a page's links past this many are dropped (resolve_links); 0: all
    # No allowed_domains, and seeds too many to list (a seeds file): requests may go to any host
    # (but denied_domains, and fetch.block_private's guard), and a link is followed when it
    # stays on the site of the page it is on (its registrable domain; its host, without
    # include_subdomains). Links are resolved in the parse workers, which then load the Public
    # Suffix List once (~50 ms).
    same_site: bool = False

    def __post_init__(self) -> None:
        # Sets: a lookup per label of a host, whatever the number of domains. (frozenset() of a
        # frozenset is that same object, so a Scope unpickled in a worker costs no copy.)
        object.__setattr__(self, "allowed_domains", frozenset(self.allowed_domains))
        object.__setattr__(self, "denied_domains", frozenset(self.denied_domains))

    def outside(self, url: str) -> str | None:
        """Why the crawl may send no request to the canonical `url`; None when it may. The one
        decision on where requests go (see the class's docstring)."""
        scheme = url[: url.index(":")]
        key = host_key(url)
        host, port = _split_host_key(key, scheme)
        subdomains = self.include_subdomains
        if self.denied_domains and _matches(host, port, self.denied_domains, subdomains):
            return f"{key} is in crawl.denied_domains"
        if self.same_site and not self.allowed_domains:
            return None  # a crawl of a seeds file's sites: `allows` keeps links on their own
        if not _matches(host, port, self.allowed_domains, subdomains):
            return f"{key} is not in crawl.allowed_domains"
        return None

    def allows_host(self, host: str) -> bool:
        """Whether requests may go to `host` (a host key: host[:port]) over http."""
        return self.outside(f"http://{host.lower()}/") is None

    def allows(
        self, url: str, depth: int = 0, *, base: str | None = None, reachable: bool | None = None
    ) -> bool:
        """May the crawl follow a link to `url` found at `depth` on the page `base`? `reachable`
        is `outside(url) is None` when the caller knows it (`resolve_links` asks once per origin
        of a page: ~4 µs a link otherwise)."""
        if self.max_depth and depth > self.max_depth:
            return False
        if self.max_url_length and len(url) > self.max_url_length:
            return False
        if reachable is None:
            reachable = self.outside(url) is None
        if not reachable or not self._allows_path(url):
            return False
        if self.same_site and not self.allowed_domains and base is not None:
            return self._site(host_of(url)) == self._site(host_of(base))
        return True

    def _site(self, host: str) -> str:
        return registrable_domain(host) if self.include_subdomains else host

    def _allows_path(self, url: str) -> bool:
        if self.skip_extensions and _extension(url) in self.skip_extensions:
            return False
        if self.include and not any(p.search(url) for p in self.include):
            return False
        return not any(p.search(url) for p in self.exclude)


def in_scope(job: tuple[Scope, tuple[str, ...], str | None]) -> tuple[str, ...]:
    """The URLs of `(scope, urls, base)` that the scope allows (depth aside) as links of the page
    `base`, in order: a top-level function for a parse worker, so that crawl.include and
    crawl.exclude, a user's regexes, never run on the event loop (`admit.py`)."""
    scope, urls, base = job
    return tuple(url for url in urls if scope.allows(url, base=base))


def _split_host_key(key: str, scheme: str) -> tuple[str, str]:
    """("example.com", "8080") from "example.com:8080"; the scheme's port when none is given.
    An IPv6 host keeps its brackets ("[::1]"), as domain entries write it."""
    if key.startswith("["):
        host, _, port = key.partition("]")
        return host + "]", port[1:] or _DEFAULT_PORTS.get(scheme, "")
    host, _, port = key.partition(":")
    return host, port or _DEFAULT_PORTS.get(scheme, "")


def _matches(host: str, port: str, domains: Collection[str], subdomains: bool) -> bool:
    """Is `host` (on `port`) one of `domains` ("example.com", or "example.com:8080" for that
    port only), or with `subdomains` below one? A lookup per label: "a.b.example.com" asks for
    itself, "b.example.com" and "example.com", never "com" alone unless a domain is "com"."""
    name = host
    # An address has no parent domains: "0.0.1" is no domain of "127.0.0.1".
    walk = subdomains and host[-1:] != "]" and not _DOTTED_QUAD.fullmatch(host)
    while True:
        if name in domains or f"{name}:{port}" in domains:
            return True
        dot = name.find(".")
        if not walk or dot < 0:
            return False
        name = name[dot + 1 :]


_DOTTED_QUAD = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def domain_entry(value: str) -> str | None:
    """A crawl.allowed_domains / denied_domains entry in the form `Scope` compares hosts with:
    lower case, punycode, numbers as dotted addresses, an IPv6 address in brackets, and the port
    if one is given ("Example.COM:8080" -> "example.com:8080"). None if it is no host."""
    text = value.strip().lstrip(".")
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text.partition("]")
        host += "]"
        if rest[:1] == ":":
            port = rest[1:]
        elif rest:
            return None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return None
    url = canonicalize(f"http://{host}/") if host and "/" not in host and "@" not in host else None
    if url is None:
        return None
    name = host_key(url)
    return f"{name}:{int(port)}" if port else name


def _extension(url: str) -> str:
    path = url.split("?", 1)[0].rsplit("/", 1)[-1]
    return path.rpartition(".")[2].lower() if "." in path else ""
