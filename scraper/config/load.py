"""Reading config.toml, applying `--set` overrides and command-line values, and checking it all
into a Config: the only way a Config is built from user input."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scraper.config.checks import Invalid, shorten, show, suggest
from scraper.config.extract import build_extraction
from scraper.config.sections import SECTIONS, Config
from scraper.config.sessions import AuthEntry, build_auth
from scraper.errors import ConfigError


def load_config(
    path: Path | None = None,
    *,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
    below: Mapping[str, Any] | None = None,
) -> Config:
    """Read `path` (None: defaults only), apply `below` ("section.key" → value: a spider's
    settings, above the file and below the rest), `--set` overrides, then `values` (e.g. seeds
    and shortcuts from the command line), and check everything."""
    raw = _read_toml(path) if path is not None else {}
    for key, value in (below or {}).items():
        _assign(raw, key, value)
    for item in overrides:
        key, value = _parse_override(item)
        _assign(raw, key, value)
    for key, value in (values or {}).items():
        _assign(raw, key, value)
    return build_config(raw)


def build_config(raw: Mapping[str, Any]) -> Config:
    """Every problem is found before any is reported: ConfigError has a line for each."""
    known = [*SECTIONS, "extract", "auth"]
    problems: list[str] = []
    tables: dict[str, Mapping[str, Any]] = {}
    for name, table in raw.items():
        if name == "auth":
            continue  # [[auth]]: a list of tables
        if name not in known:
            problems.append(f"[{shorten(name)}]: unknown section{suggest(name, known)}")
        elif not isinstance(table, dict):
            problems.append(f"{name}: must be a table ([{name}])")
        else:
            tables[name] = table
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        try:
            sections[name] = _build_section(name, cls, tables.get(name, {}))
        except ConfigError as exc:
            problems.extend(exc.problems)
    try:
        extraction = build_extraction(tables.get("extract", {}))
    except ConfigError as exc:
        problems.extend(exc.problems)
    logins: tuple[AuthEntry, ...] = ()
    try:
        logins = build_auth(raw.get("auth", []))
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(*problems)
    return Config(**sections, extract=extraction, auth=logins)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per level of nested arrays or tables
        raise ConfigError(f"{path}: not valid TOML: {_TOO_DEEP}") from exc


_TOO_DEEP = "arrays or tables nested too deeply"


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(
            f"--set {show(item)}: expected section.key=value, e.g. fetch.concurrency=32"
        )
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word such as data/x.db: take it as the string it obviously is
    except RecursionError as exc:
        raise ConfigError(f"--set {shorten(key)}=...: {_TOO_DEEP}") from exc
    return key, value


def _assign(raw: dict[str, Any], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    table = raw.setdefault(section, {})
    if isinstance(table, dict):
        table[key] = value


def _build_section(name: str, cls: type, table: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in table.items():
        if key not in fields:
            problems.append(
                f"{name}.{shorten(key)}: unknown key{suggest(key, fields, prefix=name)}"
            )
            continue
        try:
            kwargs[key] = fields[key].metadata["check"](value)
        except Invalid as exc:
            shown = "..." if fields[key].metadata.get("secret") else show(value)
            problems.append(f"{name}.{key} = {shown}: {exc}")
    if problems:  # the section's own checks (one key against another) need valid keys
        raise ConfigError(*problems)
    return cls(**kwargs)
