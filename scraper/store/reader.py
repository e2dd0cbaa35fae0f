"""The results reader: every query of `stats`, `report`, `crawls`, `export` and the presets,
written once over a DB-API connection (sqlite3 or psycopg) and a `Dialect` (dialect.py).

What stays with each backend (store/<backend>/reads.py) is a `Connection`: opening the database
read-only and checking that it is ours, a cursor that streams, its driver's errors as ours, which
crawls a process works on now (a lock each backend keeps its own way), and `scraper query`'s
guard against statements that write.

These run at the CLI's edge with no event loop. One connection serves every read: a stream may
be left half read while other reads run beside it, and whatever is still open is closed with
the reader (a server-side cursor outliving its connection is an error psycopg reports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
from collections.abc import Collection, Iterator, Sequence
from typing import Any, Protocol

from scraper.errors import StorageError
from scraper.store.base import CrawlCounts, CrawlLimits, CrawlRow, HostCount, Rows
from scraper.store.dialect import COUNT_QUERIES, Dialect, counts_from

STREAM_ROWS = 2000  # rows a streaming cursor brings per round trip
Table = tuple[list[str], list[tuple[Any, ...]]]  # column names, rows


class Cursor(Protocol):
    """The part of a DB-API cursor the reader uses (sqlite3's and psycopg's both have it)."""

    @property
    def description(self) -> Sequence[Sequence[Any]] | None: ...

    def execute(self, sql: str, params: Sequence[Any], /) -> object: ...

    def fetchall(self) -> Sequence[tuple[Any, ...]]: ...

    def fetchmany(self, size: int, /) -> Sequence[tuple[Any, ...]]: ...

    def __iter__(self) -> Iterator[tuple[Any, ...]]: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """A backend's read-only connection, as the reader uses it."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def location(self) -> str: ...

    @property
    def errors(self) -> type[Exception]:
        """The driver's base error class."""
        ...

    def cursor(self, *, stream: bool = False) -> Cursor:
        """A cursor; with `stream`, one whose rows come STREAM_ROWS at a time, however many
        there are, so memory stays flat."""
        ...

    def failed(self, exc: Exception) -> StorageError:
        """A driver's error in a read, as the user hears it (the connection reads on after)."""
        ...

    def held(self, crawl_ids: Collection[int]) -> set[int]:
        """Which of these crawls some process works on now (its end is not recorded yet)."""
        ...

    def run_query(self, sql: str, *, timeout: float | None) -> Rows:
        """`ResultsReader.run_query`: the user's statement, refused if it writes."""
        ...


class Reader:
    """`ResultsReader` (store/base.py) over a backend's `Connection`."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._dialect = conn.dialect
        self._open: list[Cursor] = []  # streams not read to their end

    @property
    def location(self) -> str:
        return self._conn.location

    def close(self) -> None:
        """Close the streams left half read (before their connection closes)."""
        for cursor in list(self._open):
            self._done(cursor)

    # -- running SQL ------------------------------------------------------------------------

    def _table(self, sql: str, params: Sequence[Any] = ()) -> Table:
        cursor = self._conn.cursor()
        try:
            cursor.execute(self._dialect.sql(sql), params)
            return [d[0] for d in cursor.description or ()], list(cursor.fetchall())
        except self._conn.errors as exc:
            raise self._conn.failed(exc) from exc
        finally:
            cursor.close()

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._table(sql, params)[1]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...]:
        return self._rows(sql, params)[0]

    def _stream(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """The rows of `sql` as they come; an error in the statement is raised here, one
        while reading on when it happens."""
        cursor = self._conn.cursor(stream=True)
        self._open.append(cursor)
        try:
            cursor.execute(self._dialect.sql(sql), params)
            first = cursor.fetchmany(1)  # a statement that fails at its first row fails here
        except self._conn.errors as exc:
            self._done(cursor)
            raise self._conn.failed(exc) from exc
        columns = [d[0] for d in cursor.description or ()]

        def rows() -> Iterator[tuple[Any, ...]]:
            try:
                yield from itertools.chain(first, cursor)
            except self._conn.errors as exc:
                raise self._conn.failed(exc) from exc
            finally:
                self._done(cursor)

        return Rows(columns, rows())

    def _done(self, cursor: Cursor) -> None:
        if cursor in self._open:
            self._open.remove(cursor)
            with contextlib.suppress(self._conn.errors):
                cursor.close()

    # -- crawls -----------------------------------------------------------------------------

    def find_crawl(self, crawl_id: int | None = None) -> CrawlRow:
        """A crawl the table calls `running` that no process holds (see `Connection.held`) is
        read again (one that ended meanwhile shows its end by then); one still `running` died
        without recording its end: it is `interrupted`, ended with its last page (not now: its
        duration must not grow with time)."""
        crawl = self._crawl_row(crawl_id)
        if crawl is not None and crawl.status == "running" and not self._conn.held({crawl.id}):
            crawl = self._crawl_row(crawl.id)
            if crawl is not None and crawl.status == "running":
                (last,) = self._one(
                    "SELECT max(fetched_at) FROM pages WHERE crawl_id = ?", (crawl.id,)
                )
                ended = last or crawl.started_at
                crawl = dataclasses.replace(crawl, status="interrupted", finished_at=ended)
        if crawl is not None:
            return crawl
        first, last = self._one("SELECT min(id), max(id) FROM crawls")
        if first is None:
            raise StorageError("the database holds no crawl yet")
        known = f"{first}" if first == last else f"{first} to {last}"
        raise StorageError(f"--crawl {crawl_id}: no such crawl (this database has crawl {known})")

    def _crawl_row(self, crawl_id: int | None) -> CrawlRow | None:
        sql = "SELECT id, status, started_at, finished_at, duration_s, counters, seeds FROM crawls"
        if crawl_id is None:
            rows = self._rows(f"{sql} ORDER BY id DESC LIMIT 1")
        else:
            rows = self._rows(f"{sql} WHERE id = ?", (crawl_id,))
        return CrawlRow(*rows[0]) if rows else None

    def list_crawls(self) -> Rows:
        """Each crawl with its state and counters. A crawl the table calls `running` may have
        died without recording its end (kill -9, a second Ctrl-C): the locks are probed after
        the table is read; if no process holds one, the table is read again (a crawl that
        ended meanwhile shows its end by then), and a row `running` both times whose crawl no
        process holds is `interrupted`."""
        columns, rows = self._crawl_rows()
        running = {row[0] for row in rows if row[1] == "running"}
        if running - self._conn.held(running):
            columns, rows = self._crawl_rows()
            held = self._conn.held(running)
            rows = [
                (row[0], "interrupted", *row[2:])
                if row[0] in running and row[1] == "running" and row[0] not in held
                else row
                for row in rows
            ]
        return Rows(columns, iter(rows))

    def _crawl_rows(self) -> Table:
        # A crawl from a seeds file keeps the first ten seeds; say how many there were. (A
        # SQLite database older than schema v5 has no seeds_count, and is read as it is.)
        seeds = "c.seeds"
        if "seeds_count" in self._table("SELECT * FROM crawls WHERE 0 = 1")[0]:
            length = f"json_array_length({self._dialect.json.format('c.seeds')})"
            seeds = (
                f"CASE WHEN c.seeds_count > {length} THEN "
                "c.seeds || ' (' || c.seeds_count || ' seeds)' ELSE c.seeds END AS seeds"
            )
        return self._table(
            "SELECT c.id, c.status, c.started_at, c.finished_at, c.pages, c.errors, "
            "  (SELECT count(*) FROM frontier f WHERE f.crawl_id = c.id AND f.state < 2) "
            f"  AS pending, c.duration_s, {seeds} FROM crawls c ORDER BY c.id"
        )

    def seeds(self) -> list[str]:
        return [str(seeds) for (seeds,) in self._rows("SELECT seeds FROM crawls")]

    def worker_shares(self, crawl_id: int) -> list[tuple[str, int, str]]:
        if not self._dialect.fleet:
            return []  # one process per crawl: no workers table
        return [
            (str(worker), int(pages), str(status))
            for worker, pages, status in self._rows(
                "SELECT id, pages, status FROM workers WHERE crawl_id = ? ORDER BY pages DESC, id",
                (crawl_id,),
            )
        ]

    # -- counts -----------------------------------------------------------------------------

    def counts(self, crawl_id: int) -> CrawlCounts:
        return counts_from(*(self._rows(sql, (crawl_id,)) for sql in COUNT_QUERIES))

    def top_hosts(self, crawl_id: int, limit: int) -> list[HostCount]:
        rows = self._rows(
            f"SELECT {self._dialect.host} AS host, count(*), count(error_kind) FROM pages "
            "WHERE crawl_id = ? GROUP BY host ORDER BY 2 DESC, host LIMIT ?",
            (crawl_id, limit),
        )
        return [HostCount(str(host), int(pages), int(errors)) for host, pages, errors in rows]

    def limits(self, crawl_id: int) -> CrawlLimits:
        """What the crawl's limits left: its stored config's limits, the URLs still pending,
        the hosts at their cap, the deepest page stored."""
        ((config,),) = self._rows("SELECT config FROM crawls WHERE id = ?", (crawl_id,))
        crawl = json.loads(config).get("crawl", {}) if config else {}
        cap = int(crawl.get("max_pages_per_host") or 0)
        ((pending,),) = self._rows(
            "SELECT count(*) FROM frontier WHERE crawl_id = ? AND state = 0", (crawl_id,)
        )
        ((deepest,),) = self._rows("SELECT max(depth) FROM pages WHERE crawl_id = ?", (crawl_id,))
        capped = 0
        if cap:
            ((capped,),) = self._rows(
                "SELECT count(*) FROM (SELECT host FROM frontier WHERE crawl_id = ? "
                "AND state = 2 GROUP BY host HAVING count(*) >= ?) AS full_hosts",
                (crawl_id, cap),
            )
        return CrawlLimits(
            max_pages=int(crawl.get("max_pages") or 0),
            max_pages_per_host=cap,
            max_depth=int(crawl.get("max_depth") or 0),
            pending=int(pending),
            capped_hosts=int(capped),
            deepest=None if deepest is None else int(deepest),
        )

    def status_counts(self, crawl_id: int) -> list[tuple[str, int]]:
        return [
            (str(status), int(n))
            for status, n in self._rows(
                "SELECT coalesce(CAST(status AS TEXT), 'no response'), count(*) FROM pages "
                "WHERE crawl_id = ? GROUP BY status ORDER BY status IS NULL, status",
                (crawl_id,),
            )
        ]

    def depth_counts(self, crawl_id: int) -> list[tuple[int, int]]:
        return [
            (int(depth), int(n))
            for depth, n in self._rows(
                "SELECT depth, count(*) FROM pages WHERE crawl_id = ? GROUP BY depth "
                "ORDER BY depth",
                (crawl_id,),
            )
        ]

    def content_type_counts(self, crawl_id: int) -> list[tuple[str | None, int]]:
        """Pages by their Content-Type header as sent (parameters and case included): a site
        spells one type many ways, which the report folds."""
        return [
            (None if kind is None else str(kind), int(n))
            for kind, n in self._rows(
                "SELECT content_type, count(*) FROM pages WHERE crawl_id = ? GROUP BY content_type",
                (crawl_id,),
            )
        ]

    def errors_by_kind(self, crawl_id: int) -> list[tuple[str, int, str, str | None]]:
        # The example is the kind's greatest URL, a page of this crawl (pages.url is unique;
        # PostgreSQL indexes md5(url), not url: the crawl's index narrows its join instead).
        rows = self._rows(
            "SELECT k.error_kind, k.pages, k.url, p.error FROM ("
            "  SELECT error_kind, count(*) AS pages, max(url) AS url FROM pages "
            "  WHERE crawl_id = ? AND error_kind IS NOT NULL GROUP BY error_kind) k "
            "JOIN pages p ON p.crawl_id = ? AND p.url = k.url "
            "ORDER BY k.pages DESC, k.error_kind",
            (crawl_id, crawl_id),
        )
        return [(str(kind), int(n), str(url), error) for kind, n, url, error in rows]

    def error_pages(self, crawl_id: int, limit: int) -> list[tuple[Any, ...]]:
        return self._rows(
            "SELECT url, status, error_kind, error, referrer FROM pages "
            "WHERE crawl_id = ? AND error_kind IS NOT NULL ORDER BY error_kind, url LIMIT ?",
            (crawl_id, limit),
        )

    # -- times ------------------------------------------------------------------------------

    def latencies(self, crawl_id: int) -> tuple[int, Iterator[float]]:
        where = "FROM pages WHERE crawl_id = ? AND elapsed_ms IS NOT NULL"
        (count,) = self._one(f"SELECT count(*) {where}", (crawl_id,))
        values = self._stream(f"SELECT elapsed_ms {where} ORDER BY elapsed_ms", (crawl_id,))
        return int(count), (value for (value,) in values.rows)

    def host_latencies(
        self, crawl_id: int, hosts: int
    ) -> tuple[dict[str, int], Iterator[tuple[str, float]]]:
        host = self._dialect.host
        counts = {
            str(name): int(n)
            for name, n in self._rows(
                f"SELECT {host} AS host, count(*) FROM pages "
                "WHERE crawl_id = ? AND elapsed_ms IS NOT NULL "
                "GROUP BY host ORDER BY 2 DESC, host LIMIT ?",
                (crawl_id, hosts),
            )
        }
        rows = self._stream(
            f"SELECT {host} AS host, elapsed_ms FROM pages "
            "WHERE crawl_id = ? AND elapsed_ms IS NOT NULL ORDER BY host, elapsed_ms",
            (crawl_id,),
        )
        return counts, ((name, ms) for name, ms in rows.rows)

    def fetch_span(self, crawl_id: int) -> float | None:
        fetched = self._dialect.time.format("fetched_at")
        (span,) = self._one(
            f"SELECT {self._dialect.seconds_between(f'min({fetched})', f'max({fetched})')} "
            "FROM pages WHERE crawl_id = ?",
            (crawl_id,),
        )
        return None if span is None else float(span)

    def pages_per_bucket(self, crawl_id: int, width: float) -> dict[int, int]:
        d = self._dialect
        fetched = d.time.format("fetched_at")
        first = f"(SELECT min({fetched}) FROM pages WHERE crawl_id = ?)"
        bucket = d.floor.format(f"{d.seconds_between(first, fetched)} / ?")
        rows = self._rows(
            f"SELECT {bucket}, count(*) FROM pages WHERE crawl_id = ? GROUP BY 1",
            (crawl_id, width, crawl_id),
        )
        return {int(n): int(pages) for n, pages in rows}

    # -- pages ------------------------------------------------------------------------------

    def pages(self, crawl_id: int | None) -> Rows:
        if crawl_id is None:
            return self._stream("SELECT * FROM pages ORDER BY id")
        return self._stream("SELECT * FROM pages WHERE crawl_id = ? ORDER BY id", (crawl_id,))

    def field_names(self, crawl_id: int | None) -> list[str]:
        where, params = ("AND crawl_id = ?", (crawl_id,)) if crawl_id is not None else ("", ())
        fields = self._dialect.json.format("pages.fields")
        return [
            str(name)
            for (name,) in self._rows(
                f"SELECT DISTINCT j.key FROM pages, json_each({fields}) AS j "
                f"WHERE pages.fields IS NOT NULL {where} ORDER BY 1",
                params,
            )
        ]

    # -- items ------------------------------------------------------------------------------

    def items(self, crawl_id: int | None, *, after: int = 0, limit: int | None = None) -> Rows:
        """A spider's items (id, url, position, callback, data), of one crawl or all, in the
        order stored; `after`: only those with a greater id; `limit`: at most that many."""
        where, params = "WHERE id > ?", [after]
        if crawl_id is not None:
            where, params = f"{where} AND crawl_id = ?", [after, crawl_id]
        bound = f" LIMIT {int(limit)}" if limit is not None else ""
        return self._stream(
            f"SELECT id, url, position, callback, data FROM items {where} ORDER BY id{bound}",
            params,
        )

    def item_counts(self, crawl_id: int) -> tuple[list[tuple[str, int]], int]:
        """The crawl's items per callback (most first), and how many of its pages have any
        (none in a database from before spiders: no items table)."""
        if not self._has_table("items"):
            return [], 0
        by_callback = self._rows(
            "SELECT callback, count(*) FROM items WHERE crawl_id = ? GROUP BY callback "
            "ORDER BY 2 DESC, 1",
            (crawl_id,),
        )
        (pages,) = self._one(
            "SELECT count(DISTINCT url) FROM items WHERE crawl_id = ?", (crawl_id,)
        )
        return [(str(name), int(n)) for name, n in by_callback], int(pages or 0)

    def _has_table(self, name: str) -> bool:
        if self._dialect.name == "sqlite":
            sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            sql = (
                "SELECT count(*) FROM pg_tables "
                "WHERE tablename = ? AND schemaname = current_schema()"
            )
        return bool(self._one(sql, (name,))[0])

    # -- the user's SQL ---------------------------------------------------------------------

    def preset_sql(self, name: str, sql: str) -> str:
        return self._dialect.presets.get(name, sql)

    def run_query(self, sql: str, *, timeout: float | None = None) -> Rows:
        return self._conn.run_query(sql, timeout=timeout)
