"""The errors a user can act on.

    ScraperError            anything the user can fix; printed as one line, exit code 2
    ├── ConfigError         config.toml, --set or a command-line value is invalid (a line for
    │                       each problem found)
    ├── StorageError        the database cannot be created, opened or written, or is not ours
    ├── ArchiveError        the WARC folder (storage.warc) cannot be written: not writable, full
    ├── QueryError          `scraper query` was given bad SQL or a statement that writes
    └── OutputError         a file to write (--out, --log-file) cannot be created or written

Fetch failures (dead hosts, timeouts, HTTP errors) are not exceptions at this level: they are data,
stored with the page that failed. Anything else that escapes is a bug and keeps its traceback.
Errors of the libraries underneath (sqlite3, a database driver) are mapped into these where they
enter, in the backend that speaks to them, and chained (`raise ... from exc`), so `--debug` shows
the cause.
"""

from __future__ import annotations


class ScraperError(Exception):
    """An error the user can act on; its message is one line that says what to change."""

    @property
    def lines(self) -> list[str]:
        """What to print, a line each: one, but for a ConfigError with several problems."""
        return [str(self)]


class ConfigError(ScraperError):
    """One or more problems with the configuration, each a line: a file with two mistakes says
    both at once."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems

    @property
    def lines(self) -> list[str]:
        return list(self.problems)


class StorageError(ScraperError):
    pass


class ArchiveError(ScraperError):
    pass


class QueryError(ScraperError):
    pass


class OutputError(ScraperError):
    pass
