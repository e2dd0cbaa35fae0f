"""The errors a user can act on.

    ScraperError            anything the user can fix; printed as one line, exit code 2
    ├── ConfigError         config.toml, --set or a command-line value is invalid
    ├── StorageError        the database cannot be created, opened or written, or is not ours
    ├── QueryError          `scraper query` was given bad SQL or a statement that writes
    └── OutputError         a file to write (--out, --log-file) cannot be created or written

Fetch failures (dead hosts, timeouts, HTTP errors) are not exceptions at this level: they are data,
stored with the page that failed. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import sqlite3


class ScraperError(Exception):
    """An error the user can act on; its message is one line that says what to change."""


class ConfigError(ScraperError):
    pass


class StorageError(ScraperError):
    pass


class QueryError(ScraperError):
    pass


class OutputError(ScraperError):
    pass


def explain_sqlite(exc: sqlite3.Error) -> str:
    """SQLite's message, with what to do about the two a user meets most."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return (
            f"{text}: the file or its folder is read-only; check permissions or pick another --db"
        )
    if "locked" in text or "busy" in text:
        return f"{text}: another program holds it (another crawl?); wait, or pick another --db"
    if "unable to open" in text:
        return f"{text}: is it a folder, or in a folder you may not write to?"
    return text
