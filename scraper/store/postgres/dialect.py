"""SQL that both sides run on PostgreSQL (the crawl's end, with psycopg's async connection, and
the read-side commands, with its plain one): one text each."""

from __future__ import annotations

from scraper.store.dialect import HOST_SQL_POSTGRES, count_queries, counts_from

HOST_SQL = HOST_SQL_POSTGRES
COUNT_QUERIES = count_queries("%s")

__all__ = ["COUNT_QUERIES", "HOST_SQL", "counts_from"]
