"""The configuration reference the manual shows (docs/reference/configuration.md): every key of
every section, its type, default and meaning, read from the sections' fields, so the reference
cannot drift from what the loader accepts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from scraper.config.sections import SECTIONS
from scraper.config.sessions import AuthEntry

# A field's annotation (sections.py imports annotations as strings) → the type the reader sees.
_KINDS = {
    "bool": "boolean",
    "int": "integer",
    "float": "number (seconds)",
    "str": "string",
    "TextMode": "string",
    "tuple[str, ...]": "list of strings",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """One key of config.toml as the reference documents it."""

    section: str
    name: str
    kind: str
    default: object  # the Python value an absent key means
    shown: str  # that default as written in TOML
    doc: str

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def config_keys() -> Iterator[Key]:
    """Every key of every section, in the order of the sections and their fields."""
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = _default(f)
            yield Key(
                section=section,
                name=f.name,
                kind=f.metadata["kind"] or _KINDS[str(f.type)],
                default=default,
                shown=f.metadata["shown"] or toml_value(default),
                doc=f.metadata["doc"],
            )


def toml_value(value: object) -> str:
    """`value` written as TOML (the types the sections' fields hold)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML spelling for {value!r}")


def render_reference() -> str:
    """The reference in Markdown: a section per table, an entry per key (anchored `#section.key`,
    so guides link to a key)."""
    lines: list[str] = []
    for section, cls in SECTIONS.items():
        lines += [f"## `[{section}]` {{#{section}}}", "", _first_line(cls.__doc__), ""]
        for key in (k for k in config_keys() if k.section == section):
            lines += [
                f"### `{key.dotted}` {{#{key.dotted}}}",
                "",
                f"*{key.kind}*, default `{key.name} = {key.shown}`",
                "",
                key.doc,
                "",
            ]
    return "\n".join(lines + _auth_reference())


def _auth_reference() -> list[str]:
    """`[[auth]]`, a list of tables (one per host's login), from AuthEntry's fields."""
    lines = [
        "## `[[auth]]` {#auth}",
        "",
        _first_line(AuthEntry.__doc__) + " Default: none. See "
        "[Sessions, logins and proxies](../guides/sessions.md#logins).",
        "",
    ]
    for f in dataclasses.fields(AuthEntry):
        keys = f.metadata.get("keys", f"`{f.name}`")  # (the password: one of two keys)
        lines += [f"### `[[auth]]` {keys} {{#auth-{f.name}}}", "", f.metadata["doc"], ""]
    return lines


def _default(f: dataclasses.Field[Any]) -> object:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0]
