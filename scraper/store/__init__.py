"""Storage: the seams in base.py, one folder per backend, and the two functions that pick one.

`storage.db` names the database; today every value is a SQLite file's path (store/sqlite/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scraper.config import StorageConfig
    from scraper.store.base import Backend, ResultsOpener


def open_backend(storage: StorageConfig) -> Backend:
    """The backend `storage.db` names, for one crawl process: `async with open_backend(s) as b`."""
    from scraper.store.sqlite.backend import SqliteBackend

    return SqliteBackend(storage.db)


def open_results(db: str) -> ResultsOpener:
    """Read-only access to the results `db` names: `with open_results(db) as reader`."""
    from scraper.store.sqlite.reads import open_sqlite_results

    return open_sqlite_results(db)
