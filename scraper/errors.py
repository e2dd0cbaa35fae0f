"""The errors a user can act on.

    ScraperError            anything the user can fix; printed as one line, exit code 2
    ├── ConfigError         config.toml, --set or a command-line value is invalid
    ├── StorageError        the database cannot be created, opened or written, or is not ours
    └── QueryError          `scraper query` was given bad SQL or a statement that writes

Fetch failures (dead hosts, timeouts, HTTP errors) are not exceptions at this level: they are data,
stored with the page that failed. Anything else that escapes is a bug and keeps its traceback.
"""


class ScraperError(Exception):
    """An error the user can act on; its message is one line that says what to change."""


class ConfigError(ScraperError):
    pass


class StorageError(ScraperError):
    pass


class QueryError(ScraperError):
    pass
