"""The storage contract, written once and run against every backend (store/base.py): the frontier
(seed, lease, resume after a crash, counts), the page writer (a batch of pages, the URLs they
discovered and their done marks, stored together or not at all) and the crawls table, read back
through the backend's ResultsReader. A new backend is proved by adding it to BACKENDS."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

import pytest

from scraper.config import StorageConfig
from scraper.crawl.seeds import digest_of
from scraper.errors import QueryError, StorageError
from scraper.models import CrawlRequest, ErrorKind, FetchResult, PageRecord, ParseResult
from scraper.store import open_backend, open_results
from scraper.store.base import Backend, FleetRules, FrontierState, HostPoliteness, ResultsReader
from scraper.store.location import redact

PENDING, LEASED, DONE = FrontierState.PENDING, FrontierState.LEASED, FrontierState.DONE
A, B = "http://127.0.0.1:8001", "http://127.0.0.2:8002"

BACKENDS = ["sqlite", "postgresql"]
T = TypeVar("T")


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh, empty database of the backend is (what storage.db would say)."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        return url
    assert request.param == "sqlite"
    return str(tmp_path / "contract.db")


def backend(location: str) -> Backend:
    return open_backend(StorageConfig(db=location))


def reader(location: str) -> AbstractContextManager[ResultsReader]:
    return open_results(location)


async def read(location: str, check: Callable[[ResultsReader], T]) -> T:
    """Run `check` on the results reader in a thread: the reader is for the CLI's edge, where
    no event loop runs, and these tests run on one."""

    def run() -> T:
        with reader(location) as r:
            return check(r)

    return await asyncio.to_thread(run)


def page(
    url: str,
    *,
    children: tuple[str, ...] = (),
    status: int | None = 200,
    title: str | None = "a title",
    fetched_at: str | None = "2026-01-01T00:00:00.000+00:00",
    error_kind: ErrorKind | None = None,
    fresh: bool = False,
) -> PageRecord:
    request = CrawlRequest(url=url, depth=1, fresh=fresh)
    fetch = FetchResult(
        request=request,
        fetched_at=fetched_at,  # type: ignore[arg-type]  # None: a row the database refuses
        attempts=1,
        status=status,
        bytes=100,
        elapsed_ms=12.5,
        error_kind=error_kind,
    )
    links = json.dumps(list(children))
    parsed = ParseResult(encoding="utf-8", title=title, links_json=links) if status else None
    kids = tuple(CrawlRequest(url=child, depth=2, referrer=url) for child in children)
    return PageRecord(fetch=fetch, parsed=parsed, children=kids)


async def new_crawl(b: Backend, seeds: list[str]) -> int:
    crawl_id = await b.crawls.start(digest_of(seeds), "{}")
    await b.frontier(crawl_id).seed([CrawlRequest(url=s) for s in seeds])
    return crawl_id


async def counts(b: Backend, crawl_id: int) -> tuple[int, int, int]:
    frontier = b.frontier(crawl_id)
    return (
        await frontier.count(PENDING),
        await frontier.count(LEASED),
        await frontier.count(DONE),
    )


async def test_seeds_are_leased_per_host_oldest_first_and_once(location: str) -> None:
    seeds = [f"{A}/1", f"{B}/1", f"{A}/2", f"{A}/3"]
    async with backend(location) as b:
        crawl_id = await new_crawl(b, seeds)
        frontier = b.frontier(crawl_id)
        await frontier.seed([CrawlRequest(url=f"{A}/1")])  # seeding again adds nothing
        assert await frontier.pending_hosts(10) == ["127.0.0.1:8001", "127.0.0.2:8002"]
        # In host order, from the first after `after`: a crawl of more hosts than it holds
        # pages through them.
        assert await frontier.pending_hosts(1) == ["127.0.0.1:8001"]
        assert await frontier.pending_hosts(10, after="127.0.0.1:8001") == ["127.0.0.2:8002"]
        assert await counts(b, crawl_id) == (4, 0, 0)
        first = await frontier.lease("127.0.0.1:8001", 2)
        assert [r.url for r in first] == [f"{A}/1", f"{A}/2"]
        rest = await frontier.lease("127.0.0.1:8001", 10)
        assert [r.url for r in rest] == [f"{A}/3"]
        assert await frontier.lease("127.0.0.1:8001", 10) == []
        assert await frontier.pending_hosts(10) == ["127.0.0.2:8002"]
        assert await counts(b, crawl_id) == (1, 3, 0)


async def test_a_batch_stores_pages_discoveries_and_done_marks_together(location: str) -> None:
    async with backend(location) as b:
        crawl_id = await new_crawl(b, [f"{A}/"])
        frontier = b.frontier(crawl_id)
        (seed,) = await frontier.lease("127.0.0.1:8001", 10)
        second = f"{A}/x"
        batch = [
            page(seed.url, children=(second, f"{A}/y", f"{B}/z")),
            page(f"{A}/other", children=(second, f"{A}/", f"{B}/z")),  # found twice: one row
        ]
        await b.pages(crawl_id).write(batch)
        # the seed is done; x, y, z are new and pending; "/other" was never in the frontier
        assert await counts(b, crawl_id) == (3, 0, 1)
        assert await b.pages(crawl_id).links_from(seed.url) == [second, f"{A}/y", f"{B}/z"]
        assert await b.pages(crawl_id).links_from(f"{A}/nowhere") == []
        leased = await frontier.lease("127.0.0.1:8001", 10)
        assert [(r.url, r.depth, r.referrer) for r in leased] == [
            (second, 2, seed.url),
            (f"{A}/y", 2, seed.url),
        ]

    def only_the_batch_is_stored(r: ResultsReader) -> None:
        pages = r.pages(crawl_id)
        stored = {row[pages.columns.index("url")] for row in pages.rows}
        assert stored == {seed.url, f"{A}/other"}

    await read(location, only_the_batch_is_stored)


async def test_a_batch_that_fails_stores_nothing_of_itself(location: str) -> None:
    async with backend(location) as b:
        crawl_id = await new_crawl(b, [f"{A}/"])
        (seed,) = await b.frontier(crawl_id).lease("127.0.0.1:8001", 10)
        good = page(seed.url, children=(f"{A}/new",))
        bad = page(f"{A}/bad", fetched_at=None)  # fetched_at is NOT NULL: the insert fails
        with pytest.raises(StorageError):
            await b.pages(crawl_id).write([good, bad])
        assert await counts(b, crawl_id) == (0, 1, 0)  # no discovery, no done mark
        await b.pages(crawl_id).write([good])  # the connection is usable again
        assert await counts(b, crawl_id) == (1, 0, 1)

    def one_page_is_stored(r: ResultsReader) -> None:
        assert r.counts(crawl_id).pages == 1

    await read(location, one_page_is_stored)


async def test_a_crawl_resumes_what_a_dead_process_had_leased(location: str) -> None:
    seeds = [f"{A}/1", f"{A}/2", f"{A}/3"]
    async with backend(location) as b:
        crawl_id = await new_crawl(b, seeds)
        leased = await b.frontier(crawl_id).lease("127.0.0.1:8001", 2)
        await b.pages(crawl_id).write([page(leased[0].url)])
    # the process "died" here: one leased URL was never stored
    async with backend(location) as b:
        assert await b.crawls.unfinished(digest_of(seeds)) == (crawl_id, None)
        await b.crawls.reopen(crawl_id)
        frontier = b.frontier(crawl_id)
        assert await frontier.reset_leases() == 1
        assert [r.url for r in await frontier.lease("127.0.0.1:8001", 10)] == seeds[1:]
        assert await counts(b, crawl_id) == (0, 2, 1)


async def test_a_lease_takes_no_url_past_the_page_budgets(location: str) -> None:
    """crawl.max_pages and crawl.max_pages_per_host (FleetRules), counted by the lease itself,
    in its transaction, whatever the backend: one process is a fleet of one."""
    seeds = [f"{host}/{n}" for host in (A, B) for n in range(4)]
    rules = FleetRules(max_pages=5, max_pages_per_host=3)
    async with backend(location) as b:
        crawl_id = await new_crawl(b, seeds)
        frontier = b.frontier(crawl_id, 0.0, rules)
        await frontier.reset_leases()
        assert len(await frontier.lease("127.0.0.1:8001", 2)) == 2
        assert len(await frontier.lease("127.0.0.1:8001", 10)) == 1  # its cap of 3
        assert await frontier.lease("127.0.0.1:8001", 10) == []
        assert len(await frontier.lease("127.0.0.2:8002", 10)) == 2  # the crawl's 5
        assert await frontier.lease("127.0.0.2:8002", 10) == []
        assert await counts(b, crawl_id) == (3, 5, 0)


async def test_a_resumed_crawl_counts_what_each_host_stored_against_its_budget(
    location: str,
) -> None:
    """A URL done in an earlier run of the crawl counts against crawl.max_pages_per_host and
    crawl.max_pages in the next: the budgets are the crawl's, not a run's."""
    seeds = [f"{A}/{n}" for n in range(6)]
    rules = FleetRules(max_pages_per_host=4)
    async with backend(location) as b:
        crawl_id = await new_crawl(b, seeds)
        frontier = b.frontier(crawl_id, 0.0, rules)
        await frontier.reset_leases()
        leased = await frontier.lease("127.0.0.1:8001", 3)
        await b.pages(crawl_id).write([page(request.url) for request in leased[:2]])
    # the process "died" here: two URLs stored, one leased and never stored
    async with backend(location) as b:
        frontier = b.frontier(crawl_id, 0.0, rules)
        assert await frontier.reset_leases() == 1
        assert len(await frontier.lease("127.0.0.1:8001", 10)) == 4 - 2
    async with backend(location) as b:  # the same, by the crawl's budget
        frontier = b.frontier(crawl_id, 0.0, FleetRules(max_pages=3))
        await frontier.reset_leases()
        assert len(await frontier.lease("127.0.0.1:8001", 10)) == 3 - 2


async def test_host_leases_claim_each_host_once_and_say_when_the_crawl_is_over(
    location: str,
) -> None:
    """The scheduler takes every host from its leases, whatever the backend: a host with pending
    URLs is claimed once until released, and the crawl is over once none is left."""
    a, b = "127.0.0.1:8001", "127.0.0.2:8002"
    async with backend(location) as db:
        crawl_id = await new_crawl(db, [f"{A}/1", f"{B}/1"])
        frontier = db.frontier(crawl_id)
        await frontier.reset_leases()
        leases = db.leases(crawl_id, ttl=60, margin=1)
        assert {grant.host for grant in await leases.claim(10)} == {a, b}
        assert await leases.claim(10) == []  # both held
        assert leases.holds(a) and leases.valid(a, 0.0)
        assert not await leases.over()
        for host in (a, b):
            (request,) = await frontier.lease(host, 10)
            await db.pages(crawl_id).write([page(request.url)])
        await leases.release(HostPoliteness(a))
        await leases.release(HostPoliteness(b))
        assert await leases.claim(10) == []  # nothing pending
        assert await leases.over()
        await leases.close("finished")


async def test_a_304_or_a_fresh_page_keeps_its_stored_row(location: str) -> None:
    url = f"{A}/kept"
    async with backend(location) as b:
        first = await new_crawl(b, [url])
        await b.frontier(first).lease("127.0.0.1:8001", 1)
        await b.pages(first).write([page(url, title="stored", children=(f"{A}/child",))])
        await b.crawls.finish(first, "finished", 1.0)
        second = await b.crawls.start(digest_of([url, "again"]), "{}")
        await b.frontier(second).seed([CrawlRequest(url=url)])
        await b.frontier(second).lease("127.0.0.1:8001", 1)
        await b.pages(second).write([page(url, status=304, title=None)])
        assert await b.pages(second).links_from(url) == [f"{A}/child"]

    def the_row_is_kept(r: ResultsReader) -> None:
        pages = r.pages(second)
        (row,) = [dict(zip(pages.columns, values, strict=True)) for values in pages.rows]
        assert (row["title"], row["status"], row["crawl_id"]) == ("stored", 200, second)

    await read(location, the_row_is_kept)


async def test_the_summary_at_the_end_and_the_reader_count_alike(location: str) -> None:
    seeds = [f"{A}/"]
    async with backend(location) as b:
        crawl_id = await new_crawl(b, seeds)
        await b.frontier(crawl_id).lease("127.0.0.1:8001", 1)
        await b.pages(crawl_id).write(
            [
                page(f"{A}/"),
                page(f"{A}/404", status=404, error_kind=ErrorKind.HTTP),
                page(f"{B}/gone", status=None, title=None, error_kind=ErrorKind.CONNECTION),
            ]
        )
        summary = await b.crawls.finish(crawl_id, "finished", 2.5, extra={"note": 1})
        assert summary.db == redact(location)  # where the results are, never with a password
        assert (summary.pages, summary.errors, summary.bytes) == (3, 2, 300)
        assert summary.by_status == {"2xx": 1, "4xx": 1, "none": 1}
        assert summary.by_error == {"connection": 1, "http": 1}  # the enum's values, stored
        assert await b.crawls.unfinished(digest_of(seeds)) == (0, None)

    def the_reader_agrees(r: ResultsReader) -> None:
        assert r.counts(crawl_id) == summary.counts
        crawl = r.find_crawl()
        assert (crawl.id, crawl.status, crawl.duration_s) == (crawl_id, "finished", 2.5)
        assert json.loads(crawl.counters or "{}")["note"] == 1
        hosts = {h.host: (h.pages, h.errors) for h in r.top_hosts(crawl_id, 5)}
        assert hosts == {"127.0.0.1:8001": (2, 1), "127.0.0.2:8002": (1, 1)}
        measured, latencies = r.latencies(crawl_id)
        assert (measured, list(latencies)) == (3, [12.5, 12.5, 12.5])
        with pytest.raises(StorageError, match="no such crawl"):
            r.find_crawl(crawl_id + 1)

    await read(location, the_reader_agrees)


async def test_the_reader_refuses_writes_but_reads(location: str) -> None:
    async with backend(location) as b:
        crawl_id = await new_crawl(b, [f"{A}/"])
        await b.pages(crawl_id).write([page(f"{A}/")])

    def writes_are_refused(r: ResultsReader) -> None:
        result = r.run_query("SELECT url, status FROM pages")
        assert result.columns == ["url", "status"]
        assert list(result.rows) == [(f"{A}/", 200)]
        for sql in (
            "DELETE FROM pages",
            "UPDATE pages SET title = 'x'",
            "DROP TABLE pages",
            "INSERT INTO crawls (started_at, status, seeds, config) VALUES ('', '', '', '')",
            "CREATE TABLE mine (x int)",
            "ALTER TABLE pages ADD COLUMN x int",
            "CREATE INDEX mine ON pages (title)",
        ):
            with pytest.raises(QueryError, match="refused"):
                list(r.run_query(sql).rows)
        with pytest.raises(QueryError):  # two statements: never the second
            list(r.run_query("SELECT 1; DELETE FROM pages").rows)
        with pytest.raises(QueryError, match="bad SQL"):
            r.run_query("SELECT nope FROM pages")
        endless = (
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT max(n) FROM r"
        )
        with pytest.raises(QueryError, match=r"ran past --timeout 0\.2 s"):
            list(r.run_query(endless, timeout=0.2).rows)
        assert list(r.run_query("SELECT count(*) FROM pages", timeout=5).rows) == [(1,)]

    await read(location, writes_are_refused)

    def nothing_was_written(r: ResultsReader) -> None:
        assert r.counts(crawl_id).pages == 1  # nothing was written

    await read(location, nothing_was_written)


def test_a_missing_database_is_one_clear_error(location: str) -> None:
    with pytest.raises(StorageError, match="no such database"), reader(location):
        pass


async def test_concurrent_batches_each_store_all_or_nothing(location: str) -> None:
    """Batches written from several tasks at once (as a sink and a sitemap reader may) all land,
    each discovered URL once."""
    async with backend(location) as b:
        crawl_id = await new_crawl(b, [f"{A}/"])
        writer = b.pages(crawl_id)
        shared = tuple(f"{A}/shared/{n}" for n in range(20))
        await asyncio.gather(
            *(writer.write([page(f"{A}/p{n}", children=shared)]) for n in range(10))
        )
        assert await counts(b, crawl_id) == (21, 0, 0)  # the seed and 20 shared, once each


async def test_a_request_and_its_items_go_through_the_frontier_and_the_page_writer(
    location: str,
) -> None:
    """A spider's request keeps every field from the batch that found it to its lease (a new
    field is one column: store/rows.py REQUEST_COLUMNS); its page's items are stored with it,
    once, and read back in order."""
    async with backend(location) as b:
        crawl_id = await new_crawl(b, [f"{A}/"])
        frontier = b.frontier(crawl_id)
        (seed,) = await frontier.lease("127.0.0.1:8001", 10)
        body = b'\x00{"q": 1}\xff'  # any bytes
        post = CrawlRequest(
            url=f"{A}/api", depth=1, referrer=seed.url, method="POST",
            headers='{"X-Token": "t"}', body=body, callback="found", meta='{"n": 1}',
            key=f"{A}/api#POST-1",
        )  # fmt: skip
        plain = CrawlRequest(url=f"{A}/api", depth=1, referrer=seed.url, callback="listing")
        record = page(seed.url)
        assert record.parsed is not None
        parsed = dataclasses.replace(record.parsed, items=('{"a": 1}', '{"a": 2}'))
        await b.pages(crawl_id).write(
            [dataclasses.replace(record, parsed=parsed, children=(post, plain))]
        )
        leased = await frontier.lease("127.0.0.1:8001", 10)
        assert leased == [post, plain]  # two requests of one URL: two identities
        api = dataclasses.replace(page(f"{A}/api"), fetch=dataclasses.replace(
            page(f"{A}/api").fetch, request=post))  # fmt: skip
        await b.pages(crawl_id).write([api])
        again = dataclasses.replace(record, parsed=parsed)
        await b.pages(crawl_id).write([again])  # stored twice in a crawl: its items once
        assert await counts(b, crawl_id) == (0, 1, 2)

    def items_and_pages(r: ResultsReader) -> None:
        items = [(row[1], row[2], row[3], row[4]) for row in r.items(crawl_id).rows]
        assert items == [(seed.url, 0, "parse", '{"a": 1}'), (seed.url, 1, "parse", '{"a": 2}')]
        assert [row[4] for row in r.items(crawl_id, after=0, limit=1).rows] == ['{"a": 1}']
        assert r.item_counts(crawl_id) == ([("parse", 2)], 1)
        pages = r.pages(crawl_id)
        urls = {row[pages.columns.index("url")] for row in pages.rows}
        assert urls == {seed.url, f"{A}/api#POST-1"}

    await read(location, items_and_pages)
