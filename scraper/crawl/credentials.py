"""The secrets a crawl sends, read once at the edge: the values of fetch.headers and fetch.rules
that name a variable or a file, the [[auth]] passwords, and the logins found in the seeds'
`user:pass@` (kept here only: the seed itself is stored without them).

`read_credentials` reads the environment and files, so it runs before the event loop starts (the
CLI) or in a thread (`Crawler.run` when given none)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from scraper.config import Config
from scraper.config.checks import Invalid
from scraper.config.sessions import HeaderValue, proxy_url
from scraper.errors import ConfigError
from scraper.secrets import Secret, SecretRef, read_secret
from scraper.urls import canonicalize, host_key

Headers = tuple[tuple[str, str | Secret], ...]


@dataclass(frozen=True, slots=True)
class Login:
    """Who to be on one host: `user`, its password, and "basic" or "digest"."""

    host: str
    user: str
    password: Secret
    scheme: str = "basic"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Every header and login of the crawl with its secret read: fetch.headers (`every`), the
    fetch.rules as (globs, headers), the logins by host (host and non-default port), and the
    proxies' URLs."""

    every: Headers = ()
    rules: tuple[tuple[tuple[str, ...], Headers], ...] = ()
    logins: Mapping[str, Login] = field(default_factory=dict)
    proxies: tuple[Secret, ...] = ()  # proxy URLs, credentials and all (fetch.proxies, _file)


NONE = Credentials()


def read_credentials(
    config: Config,
    seeds: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Credentials:
    """Read every secret `config` names (ConfigError, a line for the first missing one) and the
    logins of `seeds` given with `user:pass@`. Blocking: not on the event loop."""
    env = os.environ if environ is None else environ
    every = _read_headers("fetch.headers", config.fetch.headers, env)
    rules = tuple(
        (rule.urls, _read_headers(f"fetch.rules[{n}]", rule.headers, env))
        for n, rule in enumerate(config.fetch.rules, 1)
    )
    logins = {login.host: login for login in seed_logins(seeds)}
    for n, entry in enumerate(config.auth, 1):
        password = read_secret(entry.password, f"auth[{n}] ({entry.host})", env)
        logins[entry.host] = Login(entry.host, entry.user, password, entry.scheme)
    proxies = [Secret(url) for url in config.fetch.proxies]
    if config.fetch.proxies_file:
        proxies += _proxies_file(config.fetch.proxies_file)
    return Credentials(every=every, rules=rules, logins=logins, proxies=tuple(proxies))


def _proxies_file(path: str) -> list[Secret]:
    """fetch.proxies_file: a proxy URL a line; each checked as fetch.proxies are, an error
    naming its line, never its text (it may hold a password)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"fetch.proxies_file = {path!r}: cannot read it: {why}") from exc
    proxies = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            proxies.append(Secret(proxy_url(line)))
        except Invalid as exc:
            raise ConfigError(f"fetch.proxies_file = {path!r}, line {number}: {exc}") from exc
    if not proxies:
        raise ConfigError(f"fetch.proxies_file = {path!r}: no proxy URL in it")
    return proxies


def seed_logins(seeds: Iterable[str]) -> list[Login]:
    """The logins of the seeds written `scheme://user:pass@host/...` (Basic, for that host)."""
    logins = []
    for seed in seeds:
        if "@" not in seed:
            continue
        parts = urlsplit(seed)
        canonical = canonicalize(seed)
        if parts.username and canonical is not None:
            password = Secret(unquote(parts.password or ""))
            logins.append(Login(host_key(canonical), unquote(parts.username), password))
    return logins


def _read_headers(
    where: str, headers: tuple[tuple[str, HeaderValue], ...], env: Mapping[str, str]
) -> Headers:
    read: list[tuple[str, str | Secret]] = []
    for name, value in headers:
        if isinstance(value, SecretRef):
            read.append((name, read_secret(value, f"{where}.{name}", env)))
        else:
            read.append((name, value))
    return tuple(read)
