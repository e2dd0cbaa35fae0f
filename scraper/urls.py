"""URL canonicalisation and crawl scope. Pure functions: the parser uses them in its own process."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import urljoin

from yarl import URL

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

    yarl does the normalising: scheme and host lower-cased (IDN hosts to punycode), default port
    dropped, dot segments removed, percent-encoding normalised. We drop the fragment, give an
    empty path its `/`, and apply the query policy, so each page has exactly one spelling.
    Schemes other than http(s) (mailto:, javascript:, data:, tel:, file:, ...) and unparsable
    URLs give None.
    """
    raw = url.strip()
    if base is not None:
        try:
            raw = _join(base, raw)
        except ValueError:
            return None
    # A fragment never survives, and an empty query ("x?") is no query: trimming them here lets
    # such links take the fast path.
    raw = raw.partition("#")[0]
    if raw.endswith("?") and raw.count("?") == 1:
        raw = raw[:-1]
    candidate = _unescape_unreserved(raw) if "%" in raw else raw
    if _already_canonical(candidate, policy):
        return candidate  # most links: parsing one with yarl costs ~40 µs when it is not cached
    return _canonicalize_slow(raw, policy)


def resolve_links(
    hrefs: Iterable[str], base: str, policy: UrlPolicy = KEEP_QUERY, scope: Scope | None = None
) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """(links, follow, cut) of a page: its hrefs canonical (`canonicalize` against `base`),
    without the uncrawlable ones, each once, in document order; those of them `scope` allows
    (depth aside; all of them with no scope); and how many were cut: longer than the scope's
    max_url_length, or past its max_links (neither kept as links nor followed). `base` must be
    canonical, as page URLs and resolved `<base href>`s are: with a base that is not (tabs, dot
    segments), what `canonicalize` gives may depend on an href's fragment, which the memo's keys
    leave out.

    A site's pages repeat their links (menus, footers), and canonicalising and scoping one
    costs a few µs where looking it up costs a tenth of one, so each answer is remembered for
    the process's life (`_MEMO`, bounded).
    """
    by_origin, by_folder = _MEMO.tables(base, policy, scope)
    found: dict[str, bool] = {}
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
            answer = _resolve(href, base, policy, scope)
            if _rememberable(key):
                _MEMO.remember(table, key, answer)
        url, allowed = answer
        if url is not None:
            found[url] = allowed
    cut = 0
    if scope is not None and (scope.max_links or scope.max_url_length):
        found, cut = _bounded(found, scope.max_links, scope.max_url_length)
    return tuple(found), tuple(url for url, allowed in found.items() if allowed), cut


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

    Not for those whose answer depends on more of the base: "", "?q", "#f" and ";p" (the
    base's last segment and query matter to them). Nor for what urljoin reads its own way:
    whitespace or control characters at either end, tabs or line breaks inside (urljoin
    deletes them, so "/<tab>/" is "//"), "//" with no host, and an "http:" that is not
    "http://" ("http:?q" is relative). Another scheme ("mailto:") is None anywhere.
    tests/test_urls.py checks the answers against `canonicalize`."""
    first, last = key[:1], key[-1:]
    if first in "?#;" or first <= " " or last <= " " or first.isspace() or last.isspace():
        return False  # (an empty key too: "" is in any string, and <= " ")
    if "\t" in key or "\n" in key or "\r" in key:
        return False
    if key.startswith("//"):
        return key[2:3] not in ("", "?")
    scheme = _SCHEME.match(key)
    return (
        scheme is None
        or scheme.group(1).lower() not in CRAWLABLE_SCHEMES
        or key.startswith(("http://", "https://"))
    )


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")  # as urlsplit recognises one
_Answer = tuple[str | None, bool]  # (canonical URL or None, within the scope?)
_Table = dict[str, _Answer]


def _resolve(href: str, base: str, policy: UrlPolicy, scope: Scope | None) -> _Answer:
    url = canonicalize(href, base, policy)
    return url, url is not None and (scope is None or scope.allows(url, base=base))


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


_MEMO = _LinkMemo(limit=50_000)  # ~10 MB per parse worker, at most


def _unescape_unreserved(raw: str) -> str:
    """Decode the path's escapes of unreserved characters ("%41" is "A"), as yarl does; a URL
    with any other escape, or one outside the path, keeps a "%", which sends it down the slow
    path."""
    before_query, mark, query = raw.partition("?")
    start = before_query.find("/", before_query.find("//") + 2)
    if start < 0:
        return raw
    path = _ESCAPE.sub(_unescape_one, before_query[start:])
    return before_query[:start] + path + mark + query


_ESCAPE = re.compile("%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _unescape_one(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0)


def _join(base: str, href: str) -> str:
    """urljoin, without its ~7 µs for the three commonest kinds of link: absolute ones,
    root-relative ones ("/x": the base's origin + href) and path-relative ones ("x", "../x": the
    base's directory + href). Dot segments are removed later either way (by yarl), so both ways
    give the same canonical URL (tests/test_urls.py checks it). Anything else (a scheme or
    characters urljoin treats specially, "?q", "#f", "") goes to urljoin."""
    if href.startswith(("http://", "https://")):
        return href
    if not base.startswith(("http://", "https://")) or _UNUSUAL.search(href):
        return urljoin(base, href)
    origin, directory = _origin_and_directory(base)
    if "//" in directory[len(origin) :]:
        return urljoin(base, href)  # a base path with "//", which urljoin collapses
    if href.startswith(("./", "../")):
        # Leading "./" and "../" (the usual dot segments): the directory, so many levels up.
        rest = href
        while rest.startswith(("./", "../")):
            if rest.startswith("../") and len(directory) > len(origin) + 1:
                directory = directory[: directory.rindex("/", 0, -1) + 1]
            rest = rest.partition("/")[2]
        if rest.startswith((".", "/")) or "/." in rest or "//" in rest or ";" in rest:
            return urljoin(base, href)  # more dot segments, or what urljoin treats its own way
        return directory + rest
    if href.startswith(".") or "/." in href:
        return urljoin(base, href)  # other dot segments: urljoin removes them (yarl costs 5x)
    if href.startswith("/"):
        if href.startswith("//") or ";" in href:  # "/x;" loses its ";" to urljoin, as "x;" does
            return urljoin(base, href)
        return origin + href
    if href[:1] in "?#" or ":" in href.partition("/")[0] or "//" in href or ";" in href:
        # empty, query or fragment only, a scheme ("mailto:"), or "x//y" and "x;" (which urljoin,
        # unlike RFC 3986, collapses and drops): keep urljoin's answer
        return urljoin(base, href)
    return directory + href


@functools.lru_cache(maxsize=64)  # called per link, with one base per page
def _origin_and_directory(base: str) -> tuple[str, str]:
    """ "http://h/d/p?q" → ("http://h", "http://h/d/"): what "/x" and "x" are joined to."""
    start = base.index("//") + 2
    end = min((i for i in (base.find(c, start) for c in "/?#") if i >= 0), default=len(base))
    path_end = min((i for i in (base.find(c, start) for c in "?#") if i >= 0), default=len(base))
    last_slash = base.rfind("/", start, path_end)
    directory = base[: last_slash + 1] if last_slash >= 0 else base[:path_end] + "/"
    return base[:end], directory


_UNUSUAL = re.compile(r"[\\\s]")  # backslashes and whitespace: urljoin cleans or keeps them


# A URL this matches is one yarl would leave as it is (tests/test_urls.py checks that): lower-case
# http(s), an ASCII host of lower-case labels, a port without leading zeros, a path of characters
# needing no escape and no "." or ".." segment, and a non-empty query of the same characters.
_SAFE = r"[A-Za-z0-9\-._~!$&'()*+,;=:@]"
_CANONICAL_SHAPE = re.compile(
    r"(https?)://([a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)"
    r"(?::([1-9][0-9]{0,4}))?"
    rf"(?:/(?!\.\.?(?:/|\?|$)){_SAFE}*)+"
    rf"(\?(?:{_SAFE}|[/?])+)?"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _already_canonical(raw: str, policy: UrlPolicy) -> bool:
    match = _CANONICAL_SHAPE.fullmatch(raw)
    if match is None:
        return False
    scheme, host, port, query = match.groups()
    if port is not None and (port == _DEFAULT_PORTS[scheme] or int(port) > 65535):
        return False
    if host[host.rfind(".") + 1].isdigit() and _canonical_host(host) != host:
        return False  # "127.1", "2130706433": an address spelt otherwise, or no address at all
    return query is None or (policy.query == "keep" and not policy.drop_params)


@functools.lru_cache(maxsize=16_384)  # a site's links repeat (menus): each worker parses each once
def _canonicalize_slow(raw: str, policy: UrlPolicy) -> str | None:
    try:
        parsed = URL(raw)
        if parsed.scheme not in CRAWLABLE_SCHEMES or not parsed.raw_host:
            return None
        host = _canonical_host(parsed.raw_host)
        if host is None:
            return None
        if host != parsed.raw_host:
            parsed = parsed.with_host(host)
        if parsed.raw_user is not None or parsed.raw_password is not None:
            parsed = parsed.with_user(None)  # never sent, stored or shown: see _canonical_host
        parsed = _apply_query_policy(parsed.with_fragment(None), policy)
        text = str(parsed)
    except Exception:  # not just ValueError: yarl raises IndexError on "http://[::1]@"
        return None  # one hostile link must not cost its page the others
    # yarl prints an empty path as nothing ("http://a.com"); the request path is "/" either way.
    if parsed.raw_path == "/" and not parsed.raw_query_string and not text.endswith("/"):
        text += "/"
    return text


# A host name as DNS and the resolver take it, once yarl has lower-cased it and turned an IDN into
# punycode: letters, digits, "-" and "_" (which some real hosts have), in non-empty labels.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def _canonical_host(raw_host: str) -> str | None:
    """The host as the crawl's rules and the resolver should both see it, or None if it is none.

    yarl keeps whatever it is given as a host, control characters, spaces, `<>"` and escapes
    included: such a host is no host, and the URL is not crawlable. A trailing dot is dropped
    ("example.com." is "example.com", which crawl.denied_domains names), and a number in any
    spelling the resolver accepts ("2130706433", "127.1", "0x7f.1", "0177.0.0.1") becomes the
    dotted address it means, so allow and deny rules see what the connection will reach.
    IPv6 literals come checked and compressed by yarl. User names and passwords are no part of
    the host: `_canonicalize_slow` drops them, so a link's credentials are never sent."""
    if ":" in raw_host:
        return raw_host
    host = raw_host[:-1] if raw_host.endswith(".") else raw_host
    if not _HOST_NAME.fullmatch(host):
        return None
    try:
        return _ipv4(host) or host
    except ValueError:
        return None  # ends in a number, yet is no address ("1.2.3.4.5", "example.0x7f")


def _ipv4(host: str) -> str | None:
    """The dotted address a host that ends in a number stands for, as browsers read it (the
    WHATWG URL standard's IPv4 parser, which is inet_aton's): 1 to 4 parts, each decimal, octal
    (a leading 0) or hex (0x), the last filling the bytes left. None for a name; ValueError for
    a host that ends in a number and is no address."""
    labels = host.split(".")
    if _ip_number(labels[-1]) is None:
        return None
    numbers = [_ip_number(label) for label in labels]
    if len(labels) > 4 or any(n is None for n in numbers):
        raise ValueError(f"not an IPv4 address: {host}")
    *high, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in high) or last >= 256 ** (5 - len(numbers)):
        raise ValueError(f"not an IPv4 address: {host}")
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(high))
    return str(ipaddress.IPv4Address(value))


def _ip_number(label: str) -> int | None:
    if label[:2] in ("0x", "0X"):
        digits, base = label[2:] or "0", 16
    elif len(label) > 1 and label[0] == "0":
        digits, base = label[1:], 8
    else:
        digits, base = label, 10
    if not digits.isascii() or not digits.isalnum():
        return None
    try:
        return int(digits, base)
    except ValueError:
        return None


def _apply_query_policy(parsed: URL, policy: UrlPolicy) -> URL:
    if not parsed.raw_query_string or (policy.query == "keep" and not policy.drop_params):
        return parsed
    if policy.query == "drop":
        return parsed.with_query(None)
    pairs = [
        (name, value)
        for name, value in parsed.query.items()
        if not any(fnmatchcase(name, pattern) for pattern in policy.drop_params)
    ]
    if policy.query == "sort":
        pairs.sort()
    return parsed.with_query(pairs)


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
    parsed = URL(url)
    return f"{parsed.scheme}://{host_key(url)}"


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

    def allows(self, url: str, depth: int = 0, *, base: str | None = None) -> bool:
        """May the crawl follow a link to `url` found at `depth` on the page `base`?"""
        if self.max_depth and depth > self.max_depth:
            return False
        if self.max_url_length and len(url) > self.max_url_length:
            return False
        if self.outside(url) is not None or not self._allows_path(url):
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
