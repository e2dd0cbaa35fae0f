"""SQL that both sides run on SQLite: the crawl writing its end (aiosqlite) and the read-side
commands (sqlite3). One text each, so the summary at the end and `scraper stats` cannot disagree."""

from __future__ import annotations

from scraper.store.dialect import HOST_SQL_SQLITE, count_queries

HOST_SQL = HOST_SQL_SQLITE
COUNT_QUERIES = count_queries("?")
