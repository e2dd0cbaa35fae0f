"""Secrets: passwords, tokens and proxy credentials, read where config.toml says and never shown.

config.toml names where a secret is (`SecretRef`: an environment variable or a file), never the
secret itself, so the configuration a crawl stores in its row holds no secret. The value is read
once, at the edge, into a `Secret`, whose repr and str hide it: a Secret that reaches a log line,
an error message or a dataclass's repr by mistake shows `<hidden>`. Only the code that puts it on
the wire calls `reveal()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from scraper.errors import ConfigError

HIDDEN = "<hidden>"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret is read from: an environment variable (`env`) or a file (`file`, its
    content without the final line break)."""

    env: str = ""
    file: str = ""

    def __str__(self) -> str:
        return f"${self.env}" if self.env else f"file {self.file}"


class Secret:
    """A secret's value, hidden from repr, str and format: `reveal()` is the only way to it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({HIDDEN})"

    def __str__(self) -> str:
        return HIDDEN

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:  # a worker process gets the value
        return (Secret, (self._value,))


def read_secret(ref: SecretRef, where: str, environ: Mapping[str, str]) -> Secret:
    """The secret `ref` names; ConfigError (one line, naming `where` and the variable or file,
    never a value) when it is not there or empty. Reads a file: call it off the event loop."""
    if ref.env:
        value = environ.get(ref.env, "")
        if not value:
            raise ConfigError(f"{where}: the environment variable {ref.env} is not set or empty")
        return Secret(value)
    try:
        value = Path(ref.file).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"{where}: cannot read {ref.file}: {why}") from exc
    if not value:
        raise ConfigError(f"{where}: {ref.file} is empty")
    return Secret(value)
