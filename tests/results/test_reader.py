"""The results reader (store/reader.py), method by method, on every backend: one crawl's pages
written through the backend, then read back, and every answer the same on SQLite and PostgreSQL
(the commands `stats`, `report`, `crawls`, `export` and the presets print what these return)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scraper.config import StorageConfig
from scraper.crawl.seeds import digest_of
from scraper.models import CrawlRequest, FetchResult, PageRecord, ParseResult, SeedList
from scraper.results.presets import PRESETS
from scraper.store import open_backend, open_results
from scraper.store.base import Backend, CrawlCounts, HostCount, ResultsReader
from scraper.store.dialect import POSTGRES, SQLITE

A, B, C = "http://127.0.0.1:8001", "http://127.0.0.2:8002", "http://127.0.0.3:8003"
HOST_A, HOST_B = "127.0.0.1:8001", "127.0.0.2:8002"
SEEDS = [f"{C}/seed/{n}" for n in range(12)]  # never fetched: twelve pending URLs
T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "reader.db")


def backend(location: str) -> Backend:
    return open_backend(StorageConfig(db=location))


async def read(location: str, check: Callable[[ResultsReader], T]) -> T:
    """`check` on a reader, in a thread: the reader runs where no event loop does."""

    def run() -> T:
        with open_results(location) as reader:
            return check(reader)

    return await asyncio.to_thread(run)


def page(
    url: str,
    second: float,
    *,
    status: int | None = 200,
    depth: int = 1,
    elapsed_ms: float | None = 10.0,
    error_kind: str | None = None,
    error: str | None = None,
    fields: dict[str, Any] | None = None,
    text_hash: str | None = None,
    links: tuple[str, ...] = (),
) -> PageRecord:
    fetched_at = f"2026-01-01T00:00:{second:06.3f}+00:00"
    request = CrawlRequest(url=url, depth=depth, referrer=f"{A}/")
    fetch = FetchResult(
        request=request,
        fetched_at=fetched_at,
        attempts=1,
        status=status,
        bytes=100 if status else None,
        elapsed_ms=elapsed_ms,
        error_kind=error_kind,
        error=error,
    )
    parsed = None
    if status == 200:
        parsed = ParseResult(
            encoding="utf-8",
            title="t",
            text_hash=text_hash,
            links_json=json.dumps(list(links)),
            fields_json=json.dumps(fields) if fields is not None else None,
        )
    return PageRecord(fetch=fetch, parsed=parsed)


PAGES = [
    page(f"{A}/", 0.0, depth=0, fields={"price": "1", "name": "x"}, text_hash="h1",
         links=(f"{A}/404", f"{A}/500a")),
    page(f"{A}/404", 1.5, status=404, elapsed_ms=30.0, error_kind="http", error="HTTP 404"),
    page(f"{A}/500a", 2.5, status=500, elapsed_ms=20.0, error_kind="http", error="boom a"),
    page(f"{A}/500b", 3.0, status=500, elapsed_ms=25.0, error_kind="http", error="boom b"),
    page(f"{B}/ok", 4.25, elapsed_ms=5.0, fields={"color": ["red", "blue"]}, text_hash="h1"),
    page(f"{B}/gone", 5.0, status=None, depth=2, elapsed_ms=None, error_kind="connection",
         error="refused"),
]  # fmt: skip


async def crawled(location: str, *, finish: bool = True) -> int:
    async with backend(location) as b:
        crawl_id = await b.crawls.start(digest_of(SEEDS), "{}")
        await b.frontier(crawl_id).seed([CrawlRequest(url=s) for s in SEEDS])
        await b.pages(crawl_id).write(PAGES)
        if finish:
            await b.crawls.finish(crawl_id, "finished", 7.25)
    return crawl_id


async def test_every_count_of_a_crawl_is_the_same_on_every_backend(location: str) -> None:
    crawl_id = await crawled(location)

    def check(r: ResultsReader) -> None:
        assert r.counts(crawl_id) == CrawlCounts(
            by_status={"2xx": 2, "4xx": 1, "5xx": 2, "none": 1},
            by_error={"http": 3, "connection": 1},
            bytes=500,
        )
        assert r.top_hosts(crawl_id, 5) == [HostCount(HOST_A, 4, 3), HostCount(HOST_B, 2, 1)]
        assert r.top_hosts(crawl_id, 1) == [HostCount(HOST_A, 4, 3)]
        assert r.status_counts(crawl_id) == [
            ("200", 2), ("404", 1), ("500", 2), ("no response", 1),
        ]  # fmt: skip
        assert r.depth_counts(crawl_id) == [(0, 1), (1, 4), (2, 1)]
        # Per kind: its pages, and the page of the greatest URL as its example, with its error.
        assert r.errors_by_kind(crawl_id) == [
            ("http", 3, f"{A}/500b", "boom b"),
            ("connection", 1, f"{B}/gone", "refused"),
        ]
        assert r.error_pages(crawl_id, 10) == [
            (f"{B}/gone", None, "connection", "refused", f"{A}/"),
            (f"{A}/404", 404, "http", "HTTP 404", f"{A}/"),
            (f"{A}/500a", 500, "http", "boom a", f"{A}/"),
            (f"{A}/500b", 500, "http", "boom b", f"{A}/"),
        ]
        assert len(r.error_pages(crawl_id, 2)) == 2

    await read(location, check)


async def test_latencies_and_times_stream_in_order(location: str) -> None:
    crawl_id = await crawled(location)

    def check(r: ResultsReader) -> None:
        count, values = r.latencies(crawl_id)
        assert (count, list(values)) == (5, [5.0, 10.0, 20.0, 25.0, 30.0])
        busiest, rows = r.host_latencies(crawl_id, 1)
        assert busiest == {HOST_A: 4}
        assert list(rows) == [
            (HOST_A, 10.0), (HOST_A, 20.0), (HOST_A, 25.0), (HOST_A, 30.0), (HOST_B, 5.0),
        ]  # fmt: skip
        assert r.fetch_span(crawl_id) == pytest.approx(5.0, abs=1e-3)
        # Seconds 0, 1.5 | 2.5, 3.0 | 4.25, 5.0, by two-second buckets.
        assert r.pages_per_bucket(crawl_id, 2.0) == {0: 2, 1: 2, 2: 2}
        assert r.fetch_span(crawl_id + 1) is None
        assert r.pages_per_bucket(crawl_id + 1, 2.0) == {}
        assert r.latencies(crawl_id + 1)[0] == 0

    await read(location, check)


async def test_pages_and_their_fields_are_read_as_stored(location: str) -> None:
    crawl_id = await crawled(location)

    def check(r: ResultsReader) -> None:
        pages = r.pages(crawl_id)
        assert pages.columns[:3] == ["id", "url", "crawl_id"]
        rows = [row[:2] for row in pages.rows]
        assert [id_ for id_, _ in rows] == sorted(id_ for id_, _ in rows)  # in the order stored
        assert sorted(url for _, url in rows) == sorted(p.fetch.request.url for p in PAGES)
        assert [row[:2] for row in r.pages(None).rows] == rows
        assert list(r.pages(crawl_id + 1).rows) == []
        assert r.field_names(crawl_id) == ["color", "name", "price"]
        assert r.field_names(None) == ["color", "name", "price"]
        assert r.field_names(crawl_id + 1) == []
        assert [json.loads(s) for s in r.seeds()] == [SEEDS]

    await read(location, check)


async def test_the_crawls_list_says_how_many_seeds_and_what_is_pending(location: str) -> None:
    crawl_id = await crawled(location)

    def check(r: ResultsReader) -> None:
        listed = r.list_crawls()
        assert listed.columns == [
            "id", "status", "started_at", "finished_at", "pages", "errors", "pending",
            "duration_s", "seeds",
        ]  # fmt: skip
        ((id_, status, _, finished, pages, errors, pending, duration, seeds),) = list(listed.rows)
        assert (id_, status, pages, errors, pending, duration) == (
            crawl_id, "finished", 6, 4, 12, 7.25,
        )  # fmt: skip
        assert finished is not None
        assert seeds == json.dumps(SEEDS)  # all twelve are the sample: no "(12 seeds)"
        crawl = r.find_crawl()
        assert (crawl.id, crawl.status, crawl.duration_s) == (crawl_id, "finished", 7.25)
        assert json.loads(crawl.counters or "{}")["by_error"] == {"http": 3, "connection": 1}
        assert r.find_crawl(crawl_id) == crawl

    await read(location, check)


async def test_a_seeds_file_crawl_lists_its_sample_and_its_count(location: str) -> None:
    many = [f"{C}/file/{n}" for n in range(25)]
    async with backend(location) as b:
        crawl_id = await b.crawls.start(
            SeedList(digest_of(many).digest, 25, tuple(many[:10])), "{}"
        )
        await b.crawls.finish(crawl_id, "finished", 1.0)

    def check(r: ResultsReader) -> None:
        ((_, seeds_column),) = [(row[0], row[-1]) for row in r.list_crawls().rows]
        assert seeds_column == f"{json.dumps(many[:10])} (25 seeds)"

    await read(location, check)


async def test_a_running_crawl_is_running_and_a_dead_one_interrupted(location: str) -> None:
    def state(r: ResultsReader) -> tuple[str, str | None, list[str]]:
        crawl = r.find_crawl()
        listed = [row[1] for row in r.list_crawls().rows]
        return crawl.status, crawl.finished_at, listed

    async with backend(location) as b:
        crawl_id = await b.crawls.start(digest_of(SEEDS), "{}")
        await b.pages(crawl_id).write(PAGES)
        # This process holds the crawl: it is running, whatever the reader finds.
        assert await read(location, state) == ("running", None, ["running"])
    # The process is gone without recording an end (as after kill -9): the crawl ended with its
    # last stored page.
    last = max(p.fetch.fetched_at for p in PAGES)
    assert await read(location, state) == ("interrupted", last, ["interrupted"])


async def test_every_preset_answers_alike_on_every_backend(location: str) -> None:
    await crawled(location)

    def answers(r: ResultsReader) -> dict[str, list[tuple[Any, ...]]]:
        return {
            name: list(r.run_query(r.preset_sql(name, preset.sql)).rows)
            for name, preset in PRESETS.items()
        }

    got = await read(location, answers)
    assert got["duplicates"] == [("h1", 2, f"{A}/ {B}/ok")]
    # Most pages first; then, as SQLite sorts, no status before any status.
    assert got["status-summary"] == [
        (200, None, 2), (500, "http", 2), (None, "connection", 1), (404, "http", 1),
    ]  # fmt: skip
    assert got["broken-links"] == [
        (f"{A}/", f"{A}/404", 404, "http", "HTTP 404"),
        (f"{A}/", f"{A}/500a", 500, "http", "boom a"),
    ]
    assert got["slow-pages"][:2] == [(f"{A}/404", 30, 100, 404), (f"{A}/500b", 25, 100, 500)]
    assert got["missing-titles"] == []


async def test_a_crawl_no_worker_joined_has_no_worker_shares(location: str) -> None:
    crawl_id = await crawled(location)
    assert await read(location, lambda r: r.worker_shares(crawl_id)) == []


async def test_streams_interleave_with_reads_and_close_with_the_reader(location: str) -> None:
    """A stream half read, other reads beside it, then the rest; another left half read is
    closed with the reader (PostgreSQL's server-side cursor would outlive its connection)."""
    crawl_id = await crawled(location)

    def check(r: ResultsReader) -> None:
        pages = r.pages(crawl_id)
        first = next(pages.rows)
        assert r.counts(crawl_id).pages == 6
        _, latencies = r.latencies(crawl_id)
        assert next(latencies) == 5.0
        assert len([first, *pages.rows]) == 6
        assert next(r.pages(None).rows)[0] == first[0]  # left there

    await read(location, check)


async def test_a_finished_crawl_keeps_its_end(location: str) -> None:
    """The end is recorded once: a later `finish` of the crawl (a process stopping after
    another found the crawl over) leaves the row as the first recorded it."""
    crawl_id = await crawled(location)
    async with backend(location) as b:
        summary = await b.crawls.finish(crawl_id, "interrupted", 1.0)
    assert (summary.status, summary.pages) == ("interrupted", 6)
    crawl = await read(location, lambda r: r.find_crawl(crawl_id))
    assert (crawl.status, crawl.duration_s) == ("finished", 7.25)


def test_the_dialects_word_the_shared_sql() -> None:
    sql = "SELECT url FROM pages WHERE crawl_id = ? AND url LIKE '%/a' LIMIT ?"
    assert SQLITE.sql(sql) == sql
    assert POSTGRES.sql(sql) == (
        "SELECT url FROM pages WHERE crawl_id = %s AND url LIKE '%%/a' LIMIT %s"
    )
    assert SQLITE.seconds_between("a", "b") == "((b - a) * 86400)"
    assert POSTGRES.seconds_between("a", "b") == "extract(epoch FROM b - a)"
