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
from scraper.errors import ConfigError


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
            raise ConfigError(f"[{shorten(name)}]: unknown section{suggest(name, known)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: must be a table ([{name}])")
    sections = {
        name: _build_section(name, cls, raw.get(name, {})) for name, cls in SECTIONS.items()
    }
    return Config(**sections, extract=build_extraction(raw.get("extract", {})))


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
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(
                f"{name}.{shorten(key)}: unknown key{suggest(key, fields, prefix=name)}"
            )
        try:
            kwargs[key] = fields[key].metadata["check"](value)
        except Invalid as exc:
            raise ConfigError(f"{name}.{key} = {show(value)}: {exc}") from exc
    return cls(**kwargs)
