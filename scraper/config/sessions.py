"""What config.toml says about who a crawl is on the wire: extra headers (fetch.headers, the
per-URL-glob fetch.rules), logins ([[auth]]) and proxies (fetch.proxies), checked into frozen
values. Secrets are named here (`SecretRef`), never held: they are read at the edge
(`crawl/credentials.py`)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from scraper.config.checks import Invalid, domain, shorten, show, suggest
from scraper.errors import ConfigError
from scraper.secrets import HIDDEN, SecretRef

# RFC 9110's token: what a header's name may be made of.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers the crawl sets itself, per request: a configured value would contradict it.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "proxy-authorization"}
)
HeaderValue = str | SecretRef


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """Headers for the URLs matching one of `urls` (shell-style globs, `*` matching `/` too)."""

    urls: tuple[str, ...]
    headers: tuple[tuple[str, HeaderValue], ...]

    def matches(self, url: str) -> bool:
        return any(fnmatch.fnmatchcase(url, pattern) for pattern in self.urls)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthEntry:
    """A login: `[[auth]]` tables, each for one host."""

    host: str = field(
        metadata={
            "doc": "The host (and port, if not the scheme's) the login is for: "
            '`"example.com"`, `"example.com:8080"`. Its credentials go to this host only, '
            "never to a subdomain, another host or a redirect's target."
        }
    )
    user: str = field(metadata={"doc": "The user name."})
    password: SecretRef = field(
        metadata={
            "keys": "`password_env` or `password_file`",
            "doc": 'Set by `password_env = "NAME"` (an environment variable) or '
            '`password_file = "PATH"` (a file, its final line break dropped): never the '
            "password itself.",
        }
    )
    scheme: str = field(
        default="basic",
        metadata={
            "doc": '`"basic"`: sent with every request to the host (over HTTPS, please); '
            '`"digest"`: sent only in answer to a 401 that asks for Digest (RFC 7616).'
        },
    )


AUTH_KEYS = ("host", "user", "password_env", "password_file", "scheme")


def header_value(where: str, value: Any) -> HeaderValue:
    """A header's value: a string, or `{ env = "NAME" }` / `{ file = "PATH" }` for a secret."""
    if isinstance(value, str):
        if "\r" in value or "\n" in value or "\0" in value:
            raise Invalid(f"{where}: a header's value cannot hold a line break")
        return value
    if isinstance(value, dict) and len(value) == 1 and set(value) <= {"env", "file"}:
        ((kind, name),) = value.items()
        if isinstance(name, str) and name:
            return SecretRef(**{kind: name})
    raise Invalid(
        f'{where}: must be a string, or {{ env = "NAME" }} or {{ file = "PATH" }} for a secret'
    )


def header_table(value: Any) -> tuple[tuple[str, HeaderValue], ...]:
    """fetch.headers: a table of header names and values."""
    if not isinstance(value, dict):
        raise Invalid('must be a table of headers, e.g. { Accept-Language = "en" }')
    pairs: list[tuple[str, HeaderValue]] = []
    for name, item in value.items():
        if not _TOKEN.fullmatch(name):
            raise Invalid(f"{show(name)} is not a header name")
        if name.lower() in RESERVED_HEADERS:
            raise Invalid(f"{name}: set by the crawl itself, per request")
        pairs.append((name, header_value(name, item)))
    return tuple(pairs)


def header_rules(value: Any) -> tuple[HeaderRule, ...]:
    """fetch.rules: a list of `{ url = "<glob>" | [globs], headers = { ... } }`."""
    if not isinstance(value, list):
        raise Invalid('must be a list of tables, e.g. [{ url = "*/api/*", headers = {...} }]')
    rules = []
    for n, spec in enumerate(value, 1):
        if not isinstance(spec, dict) or set(spec) - {"url", "headers"}:
            raise Invalid(f"rule {n}: must be a table with url and headers")
        urls = spec.get("url")
        urls = [urls] if isinstance(urls, str) else urls
        if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls or [0]):
            raise Invalid(f'rule {n}: needs url = "<glob>" (or a list of them)')
        try:
            headers = header_table(spec.get("headers"))
        except Invalid as exc:
            raise Invalid(f"rule {n}: headers: {exc}") from exc
        rules.append(HeaderRule(urls=tuple(urls), headers=headers))
    return tuple(rules)


def build_auth(entries: Any) -> tuple[AuthEntry, ...]:
    """The [[auth]] tables → AuthEntry values; every problem found is a line of one
    ConfigError. A password in config.toml itself is refused: it would be stored with the
    crawl's configuration."""
    if not isinstance(entries, list):
        raise ConfigError("auth: must be [[auth]] tables, each with host, user and password_env")
    logins: list[AuthEntry] = []
    problems: list[str] = []
    hosts: set[str] = set()
    for n, spec in enumerate(entries, 1):
        where = f"auth[{n}]"
        try:
            entry = _auth_entry(where, spec)
        except Invalid as exc:
            problems.append(f"{where}: {exc}")
            continue
        if entry.host in hosts:
            problems.append(f"{where}: a second login for {entry.host}")
        hosts.add(entry.host)
        logins.append(entry)
    if problems:
        raise ConfigError(*problems)
    return tuple(logins)


def _auth_entry(where: str, spec: Any) -> AuthEntry:
    if not isinstance(spec, Mapping):
        raise Invalid('must be a table ([[auth]] with host = "...")')
    for key in spec:
        if key == "password":
            raise Invalid("no password in config.toml: use password_env or password_file")
        if key not in AUTH_KEYS:
            raise Invalid(f"{shorten(key)}: unknown key{suggest(key, AUTH_KEYS)}")
    host, user = spec.get("host"), spec.get("user")
    if not isinstance(host, str) or not isinstance(user, str) or not user or ":" in user:
        raise Invalid('needs host = "example.com" and user = "name" (no ":" in it)')
    env, file = spec.get("password_env", ""), spec.get("password_file", "")
    if not isinstance(env, str) or not isinstance(file, str) or bool(env) == bool(file):
        raise Invalid("needs one of password_env (a variable's name) or password_file (a path)")
    scheme = spec.get("scheme", "basic")
    if scheme not in ("basic", "digest"):
        raise Invalid(f'scheme = {show(scheme)}: must be "basic" or "digest"')
    return AuthEntry(
        host=domain(host), user=user, password=SecretRef(env=env, file=file), scheme=scheme
    )


def proxy_url(value: Any) -> str:
    """An http:// or https:// proxy URL, with credentials or not (the error never shows it: it
    may hold a password)."""
    parts = urlsplit(value) if isinstance(value, str) else None
    try:
        port_ok = parts is not None and (parts.port or 0) >= 0
    except ValueError:
        port_ok = False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        if isinstance(value, str) and value.startswith(("socks5://", "socks5h://", "socks4://")):
            raise Invalid("SOCKS proxies are not supported yet: an http:// or https:// proxy")
        raise Invalid("a proxy must be an http:// or https:// URL: http://[user:pass@]host:port")
    return str(value)


def hide_credentials(url: str) -> str:
    """A proxy URL as the stored configuration shows it: user and password hidden."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}{sep}{HIDDEN}@{authority.rpartition('@')[2]}{slash}{path}"
