"""URL canonicalisation and crawl scope. Pure functions: the parser uses them in its own process."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urljoin

from yarl import URL

CRAWLABLE_SCHEMES = frozenset({"http", "https"})


def canonicalize(url: str, base: str | None = None) -> str | None:
    """The canonical form of `url` (resolved against `base`), or None if it is not crawlable.

    yarl does the normalising: scheme and host lower-cased (IDN hosts to punycode), default port
    dropped, dot segments removed, percent-encoding normalised. We drop the fragment and give an
    empty path its `/`, so each page has exactly one spelling. Schemes other than http(s)
    (mailto:, javascript:, data:, tel:, file:, ...) and unparsable URLs give None.
    """
    raw = url.strip()
    if base is not None:
        try:
            raw = urljoin(base, raw)
        except ValueError:
            return None
    try:
        parsed = URL(raw)
    except (ValueError, TypeError):
        return None
    if parsed.scheme not in CRAWLABLE_SCHEMES or not parsed.host:
        return None
    parsed = parsed.with_fragment(None)
    text = str(parsed)
    # yarl prints an empty path as nothing ("http://a.com"); the request path is "/" either way.
    if parsed.raw_path == "/" and not parsed.raw_query_string and not text.endswith("/"):
        text += "/"
    return text


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


class Scope:
    """Which canonical URLs a crawl may fetch: allowed domains (subdomains included) and depth."""

    def __init__(self, allowed_domains: Iterable[str], max_depth: int) -> None:
        self._domains = tuple(d.lower().lstrip(".") for d in allowed_domains)
        self._max_depth = max_depth

    def allows_host(self, host: str) -> bool:
        host = host.lower()
        return any(host == d or host.endswith("." + d) for d in self._domains)

    def allows(self, url: str, depth: int) -> bool:
        if self._max_depth and depth > self._max_depth:
            return False
        return self.allows_host(host_of(url))
