"""Registrable domains ("example.co.uk" for "www.shop.example.co.uk"), from the Public Suffix List.

The list is the one the `publicsuffixlist` package ships (its own snapshot, updated with each
release): nothing is downloaded at run time. Loading it costs ~50 ms, once per process, and only
in processes that ask (a crawl with `fetch.politeness_key = "domain"`, the parse workers of a
crawl from a seeds file, whose scope is each page's own site, and a PostgreSQL crawl process,
which records each new host's domain for the leases); a look-up then costs ~3 µs.
"""

from __future__ import annotations

import functools
import ipaddress

from publicsuffixlist import PublicSuffixList


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()


def registrable_domain(host: str) -> str:
    """The registrable domain of a host name (lower-case, without a port), or the host itself
    when it has none: an IP address, a bare public suffix, a single label such as localhost."""
    if host.startswith("[") or _is_ip(host):
        return host
    return _suffixes().privatesuffix(host) or host


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def domain_of_host_key(key: str) -> str:
    """The registrable domain of a host key ("www.example.co.uk:8080" -> "example.co.uk")."""
    return registrable_domain(host_name(key))


def host_name(key: str) -> str:
    """The host name of a host key ("example.com:8080" -> "example.com"; IPv6 kept bracketed)."""
    if key.startswith("["):
        return key[: key.index("]") + 1]
    return key.partition(":")[0]
