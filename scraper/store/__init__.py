"""Storage: the seams in base.py, one folder per backend, and the two functions that pick one.

`storage.db` names the database: a SQLite file's path (store/sqlite/), or a PostgreSQL URL,
`postgresql://user@host:port/dbname` or `postgres://...` (store/postgres/). Each backend's
driver is imported only when a database of its kind is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scraper.store.location import is_postgres

if TYPE_CHECKING:
    from scraper.config import StorageConfig
    from scraper.store.base import Backend, ResultsOpener


def open_backend(storage: StorageConfig) -> Backend:
    """The backend `storage.db` names, for one crawl process: `async with open_backend(s) as b`."""
    if is_postgres(storage.db):
        from scraper.store.postgres.backend import PgBackend

        return PgBackend(storage.db)
    from scraper.store.sqlite.backend import SqliteBackend

    return SqliteBackend(storage.db)


def open_results(db: str) -> ResultsOpener:
    """Read-only access to the results `db` names: `with open_results(db) as reader`."""
    if is_postgres(db):
        from scraper.store.postgres.reads import open_pg_results

        return open_pg_results(db)
    from scraper.store.sqlite.reads import open_sqlite_results

    return open_sqlite_results(db)
