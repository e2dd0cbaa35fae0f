"""The checks one config value goes through, and the words of the error when it fails.

A check takes the value as TOML gave it and returns it typed (and normalised), or raises Invalid
saying what is allowed; the loader adds the key and the value to make it one ConfigError line.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from scraper.config.cpus import auto_workers, usable_cpus
from scraper.terminal import visible
from scraper.urls import canonicalize, domain_entry


class Invalid(Exception):
    """A value failed its check; the message says what is allowed."""


T = TypeVar("T")
# A value straight from TOML (tomllib's Any) in, the section field's type out.
Check = Callable[[Any], object]


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("must be an integer")
        if minimum is not None and value < minimum:
            raise Invalid(f"must be an integer ≥ {minimum}")
        if maximum is not None and value > maximum:
            raise Invalid(f"must be an integer ≤ {maximum}")
        return value

    return check


def number(minimum: float = 0.0, *, exclusive: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid("must be a number (seconds)")
        if value < minimum or (exclusive and value == minimum):
            raise Invalid(f"must be a number {'>' if exclusive else '≥'} {minimum:g}")
        return float(value)

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty string")
    return value


def list_of(item: Callable[[Any], T]) -> Callable[[Any], tuple[T, ...]]:
    def check(value: Any) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise Invalid('must be a list, e.g. ["..."]')
        return tuple(item(v) for v in value)

    return check


def seed(value: Any) -> str:
    url = canonicalize(value) if isinstance(value, str) else None
    if url is None or "://" not in value:
        raise Invalid(f"{show(value)} is not an http(s) URL")
    return url


def domain(value: Any) -> str:
    """A host name, with a port or not ("example.com", "example.com:8080"), as Scope compares
    hosts: lower case, punycode, an address spelt as a number in its dotted form."""
    entry = domain_entry(value) if isinstance(value, str) else None
    if entry is None:
        raise Invalid(f"{show(value)} is not a host name (like example.com or example.com:8080)")
    return entry


def addresses(value: Any) -> tuple[tuple[str, str], ...]:
    """A table of host names and the IP address each resolves to (fetch.resolve)."""
    if not isinstance(value, dict):
        raise Invalid(
            'must be a table of host names and addresses, e.g. {"example.com" = "127.0.0.1"}'
        )
    pairs = []
    for name, address in value.items():
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else None
        except ValueError:
            ip = None
        if ip is None:
            raise Invalid(f"{json.dumps(name)} = {show(address)}: not an IP address")
        pairs.append((domain(name), str(ip)))
    return tuple(pairs)


def worker_count(value: Any) -> int:
    """Parser processes; 0 parses on the event-loop thread (see ParsePool)."""
    if value == "auto":
        return auto_workers(usable_cpus())
    try:
        return integer(0)(value)
    except Invalid:
        raise Invalid('must be "auto", 0 (parse inline, no processes) or an integer ≥ 1') from None


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: Any) -> float:
    """Seconds, as a number or a string such as "90s", "30m", "12h", "7d"."""
    if isinstance(value, str) and value[-1:] in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        return float(value[:-1]) * _UNITS[value[-1]]
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    raise Invalid('must be a duration: seconds, or a string like "30m", "12h", "7d"')


def regex(value: Any) -> str:
    pattern = text(value)
    try:
        re.compile(pattern)
    except re.error as exc:
        raise Invalid(f"{show(pattern)} is not a valid regex: {exc}") from exc
    return pattern


def file_extension(value: Any) -> str:
    return text(value).strip().lstrip(".").lower()


def choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise Invalid(f"must be one of {', '.join(show(c) for c in choices)}")
        return str(value)

    return check


def suggest(word: str, choices: Collection[str], prefix: str = "") -> str:
    """The hint after an unknown name: " (did you mean PREFIX.NAME?)", or the known names."""
    match = difflib.get_close_matches(word[:SHOW_AT_MOST], list(choices), n=1)
    if not match:
        return f" (known: {', '.join(choices)})"
    return f" (did you mean {prefix + '.' if prefix else ''}{match[0]}?)"


SHOW_AT_MOST = 80  # characters of a value an error message shows


def show(value: Any) -> str:
    """A value as it was written, on one line and shortened to SHOW_AT_MOST characters (JSON is
    near enough to TOML; dates and times as TOML writes them)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):  # nested deeper than json recurses
        text = f"<a {type(value).__name__} nested too deeply to show>"
    return shorten(text)


def shorten(text: str) -> str:
    """`text` (a value, a key) fit for a one-line error: control characters shown as escapes,
    and at most about SHOW_AT_MOST characters."""
    text = visible(text)
    if len(text) > SHOW_AT_MOST:
        text = f"{text[: SHOW_AT_MOST - 12]}… ({len(text):,} characters)"
    return text
