"""The storage seams: what the crawl and the read-side commands depend on, whatever the backend.

    Backend          one open database for one crawl process (`async with open_backend(...)`)
    ├── crawls       CrawlLog: rows of the crawls table (start, resume, finish)
    ├── frontier()   Frontier: every URL a crawl discovered, pending / leased / done
    └── pages()      PageWriter: a batch of pages, their links, the URLs they discovered and
                     their own done marks, in ONE transaction (so the frontier and the page
                     writer come from the same backend: they share that transaction)
    ResultsReader    read-only access for `query`, `stats`, `export`, `report`, `crawls` (no
                     event loop: those commands run at the CLI's edge)

`crawl/` imports this module only; `store/<backend>/` implements it. The contract that every
backend keeps is tested once, in tests/store/test_contract.py, parametrised over the backends.
"""

from __future__ import annotations

import enum
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self

from scraper.models import CrawlRequest, PageRecord, SeedList

RESUMABLE = ("running", "interrupted", "failed")  # crawl states a new run may resume


class FrontierState(enum.IntEnum):
    """A frontier row's state. URLs only go forward (pending -> leased -> done) but for a lease
    given back (a dead process's, on resume), which returns to pending."""

    PENDING = 0
    LEASED = 1  # handed to a crawl process, not yet stored
    DONE = 2


def utc_now() -> str:
    """The timestamp format of every stored time (pages.fetched_at, crawls.started_at, ...)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class CrawlCounts:
    """What a crawl stored, counted from its pages: the end of a crawl and `scraper stats`
    compute these with one query set (a page a later crawl fetched again counts there)."""

    by_status: dict[str, int] = field(default_factory=dict)  # "2xx" ... and "none"
    by_error: dict[str, int] = field(default_factory=dict)  # error_kind -> pages
    bytes: int = 0

    @property
    def pages(self) -> int:
        return sum(self.by_status.values())

    @property
    def errors(self) -> int:
        return sum(self.by_error.values())


@dataclass(frozen=True, slots=True)
class CrawlSummary:
    """A finished (or interrupted) crawl run, as the database tells it."""

    crawl_id: int
    status: str
    db: str  # where the results are, as the user named it (never with a password)
    counts: CrawlCounts
    duration_s: float
    resumed: bool = False

    @property
    def pages(self) -> int:
        return self.counts.pages

    @property
    def errors(self) -> int:
        return self.counts.errors

    @property
    def bytes(self) -> int:
        return self.counts.bytes

    @property
    def by_status(self) -> dict[str, int]:
        return self.counts.by_status

    @property
    def by_error(self) -> dict[str, int]:
        return self.counts.by_error

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class CrawlRow:
    """One row of the crawls table."""

    id: int
    status: str
    started_at: str
    finished_at: str | None
    duration_s: float | None
    counters: str | None = None  # JSON written at the crawl's end
    seeds: str = "[]"  # JSON: the crawl's seeds (its scope, for a worker joining it)


@dataclass(frozen=True, slots=True)
class HostCount:
    host: str
    pages: int
    errors: int


@dataclass(frozen=True, slots=True)
class CrawlLimits:
    """A crawl's page limits (as its config stored them; 0: none) and what they left behind."""

    max_pages: int
    max_pages_per_host: int
    max_depth: int
    pending: int  # URLs discovered and not fetched
    capped_hosts: int  # hosts with max_pages_per_host URLs done
    deepest: int | None  # the deepest page stored


class Frontier(Protocol):
    """One crawl's frontier. Discovered URLs are added by `PageWriter.write`, in the page's
    transaction; this side seeds, leases and counts."""

    async def seed(self, requests: Sequence[CrawlRequest]) -> None:
        """Add the seeds (known URLs are left as they are)."""
        ...

    async def reset_leases(self) -> int:
        """Give back to pending what a dead process had leased; how many rows."""
        ...

    async def lease(self, host: str, limit: int) -> list[CrawlRequest]:
        """Up to `limit` pending URLs of `host` (host_key), oldest first, now leased."""
        ...

    async def pending_hosts(self, limit: int, after: str = "") -> list[str]:
        """Up to `limit` hosts that have pending URLs, in order of their host key, from the
        first after `after` (so a crawl of more hosts than it holds at once can page through
        them)."""
        ...

    async def count(self, state: FrontierState) -> int: ...

    @property
    def spent(self) -> bool:
        """Is the crawl's page budget (`FleetRules.max_pages`) spent for good, so no URL will be
        leased again? False whenever that is not certain (PostgreSQL: a URL another process
        gives back returns to the budget)."""
        ...


class PageWriter(Protocol):
    """Stores what the crawl found, a batch at a time."""

    async def write(self, records: Sequence[PageRecord]) -> None:
        """In ONE transaction: the pages (upserted by URL; a 304 or a fresh page only touched),
        the URLs they discovered (each inserted once per crawl), and the pages' own frontier
        rows marked done. All of it is stored, or none (a crash at any instant)."""
        ...

    async def links_from(self, url: str) -> list[str]:
        """The stored outgoing links of a page (to crawl on from a page kept as it was)."""
        ...


class CrawlLog(Protocol):
    """The crawls table, from the crawl's side."""

    async def unfinished(self, seeds: SeedList) -> tuple[int, int | None]:
        """(the newest crawl of these seeds if it did not finish, else 0; the newest crawl of
        other seeds if it did not finish, else None). Seeds are matched on their digest (and,
        for a crawl recorded without one, on the list itself)."""
        ...

    async def start(self, seeds: SeedList, config_json: str) -> int:
        """A new crawl's row: its seeds as a sample (JSON list), their digest and count."""
        ...

    async def reopen(self, crawl_id: int) -> None: ...

    async def finish(
        self,
        crawl_id: int,
        status: str,
        run_seconds: float,
        *,
        resumed: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> CrawlSummary:
        """Record the crawl's end and counters (from the pages it stored); its summary."""
        ...


@dataclass(frozen=True, slots=True)
class HostPoliteness:
    """A host's politeness state, as one owner leaves it to the next (None: the config's)."""

    host: str
    wait: float = 0.0  # seconds from now until a request may start there
    delay: float | None = None
    concurrency: int | None = None
    crawl_delay: float | None = None  # robots.txt's Crawl-delay
    backoff: float | None = None
    robots: str | None = None  # robots.txt as its first fetcher recorded it (RobotsGate)
    cookies: str | None = None  # the host's cookie jar as last stored (crawl/cookies.py)


@dataclass(frozen=True, slots=True)
class FleetRules:
    """What every process on one crawl applies alike, kept by the backend for the whole crawl:
    the page limits (crawl.max_pages, crawl.max_pages_per_host; 0 = none), counted by
    `Frontier.lease` in its transaction as URLs are leased (a budget is the URLs leased or done
    in the crawl, whichever run stored them), the politeness key (with "domain" a domain's
    hosts are leased together, so they have one owner at a time), and the spider: every process
    calls the same callbacks."""

    max_pages: int = 0
    max_pages_per_host: int = 0
    politeness_key: str = "host"  # fetch.politeness_key
    spider: str = ""  # the digest of the crawl's spider's source ("": none)

    @property
    def by_domain(self) -> bool:
        return self.politeness_key == "domain"


NO_RULES = FleetRules()


class HostLeases(Protocol):
    """Which hosts this process may send requests to. A single process is a fleet of one: the
    scheduler takes every host it works on from here, whatever the backend.

    SQLite: one process owns every host, so its leases live in its memory: none expires or is
    lost, `take` gives a host at once, and `claim` pages through the hosts with pending URLs.
    PostgreSQL: a host is leased to one process at a time, for `storage.lease_ttl` seconds,
    renewed while it works there; its politeness state goes with it (`HostPoliteness`), so
    per-host limits hold across processes.
    """

    @property
    def shared(self) -> bool:
        """May other processes work on the crawl (so a stopped one hands its hosts on at once)?"""
        ...

    @property
    def renew_every(self) -> float | None:
        """Seconds between two renewals (and looks for hosts others let go); None: leases never
        expire and no other process lets hosts go (hosts come only from this one's claims)."""
        ...

    async def claim(self, limit: int) -> list[HostPoliteness]:
        """Up to `limit` hosts with pending URLs that are now this process's to crawl (never
        more than its fair share)."""
        ...

    async def fair_share(self) -> int:
        """How many hosts this process may hold: the crawl's hosts with work, over the
        processes on it. One that holds more gives the rest back (the scheduler does)."""
        ...

    def take(self, host: str) -> HostPoliteness | None:
        """`host`, found to have work by this process (a stored page links there), as its own
        now, if the backend can say so without a round trip (one process owns every host);
        None: not now (a later `claim` finds it, if it is to be had)."""
        ...

    def holds(self, host: str) -> bool:
        """Is `host` this process's to crawl (leased to it, or no other process may have it)?"""
        ...

    def valid(self, host: str, now: float) -> bool:
        """May a request to `host` start at loop time `now` (the lease outlives it)?"""
        ...

    async def renew(self) -> list[str]:
        """Extend the leases held; the hosts lost meanwhile (taken over: stop sending there)."""
        ...

    def release(self, state: HostPoliteness) -> Coroutine[Any, Any, None]:
        """Give a host up (nothing of it in flight or unstored), leaving its state. The host is
        no longer this process's from the call on; the coroutine writes the release."""
        ...

    def remember_robots(self, host: str, record: str) -> Coroutine[Any, Any, None]:
        """Keep the host's robots.txt (as RobotsGate recorded it) for its next owners."""
        ...

    def remember_cookies(self, host: str, record: str) -> Coroutine[Any, Any, None]:
        """Keep the host's cookie jar (`crawl/cookies.py`'s record) for its next owner: this
        process after a restart, or another of the fleet that takes the host over."""
        ...

    async def over(self) -> bool:
        """Is the crawl over for every process: no pending URL and no live lease?"""
        ...

    async def close(self, status: str, left: Sequence[HostPoliteness] = ()) -> None:
        """Release every lease still held, each host with its politeness state in `left` (if
        there: its next start, delay, throttling) for the next owner; record this process's
        end (`status`)."""
        ...


@dataclass(frozen=True, slots=True)
class FleetLoad:
    """What the crawl's other processes do now, and what its table holds, as a live display
    wants it (crawl/gauges.py): `pending` URLs in the frontier (None: not counted; at most
    PENDING_COUNTED, then `pending_capped`), and the other processes' gauges summed."""

    pending: int | None = None
    pending_capped: bool = False
    others: int = 0  # processes on the crawl beside this one (gauged in the last few seconds)
    queued: int = 0
    in_flight: int = 0
    stored: int | None = None  # pages every other process (of every run) stored; None: unknown


PENDING_COUNTED = 100_000  # a live display's count of pending URLs stops here: a bounded query


class FleetGauges(Protocol):
    """This process's gauges, shared with the others on its crawl every few seconds."""

    async def exchange(self, queued: int, in_flight: int, *, count_pending: bool) -> FleetLoad:
        """Publish this process's URLs admitted and not fetched (`queued`) and its requests
        on the wire; the others' (and, if `count_pending`, the frontier's pending URLs)."""
        ...


class Backend(Protocol):
    """An open database for one crawl process: `async with open_backend(storage) as backend`."""

    @property
    def location(self) -> str:
        """Where the results are, for messages and the summary (never with a password)."""
        ...

    @property
    def crawls(self) -> CrawlLog: ...

    def frontier(
        self, crawl_id: int, recrawl_after: float = 0.0, rules: FleetRules = NO_RULES
    ) -> Frontier: ...

    def pages(self, crawl_id: int) -> PageWriter: ...

    def leases(
        self, crawl_id: int, *, ttl: float, margin: float, rules: FleetRules = NO_RULES
    ) -> HostLeases:
        """The host leases of this process on crawl `crawl_id`: a lease lasts `ttl` seconds; a
        request starts only while the lease has `margin` seconds left (its longest time)."""
        ...

    async def join(self, crawl_id: int, rules: FleetRules = NO_RULES) -> None:
        """Work on crawl `crawl_id` beside the processes already on it (it must be running, and
        run by the same `rules`: a ConfigError says which differs)."""
        ...

    def gauges(self, crawl_id: int) -> FleetGauges:
        """This process's gauges on crawl `crawl_id`, and the other processes' there."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Rows:
    """A result set streamed from the database: its column names and its rows."""

    columns: list[str]
    rows: Iterator[tuple[Any, ...]]


class ResultsReader(Protocol):
    """Read-only access for the commands that run after (or beside) a crawl. Every method reads;
    `run_query` refuses statements that write. Plain (no event loop): these run at the edge."""

    @property
    def location(self) -> str: ...

    def find_crawl(self, crawl_id: int | None = None) -> CrawlRow:
        """The crawl `crawl_id` (or the latest); a crawl whose process died shows `interrupted`.
        A StorageError names the crawls there are."""
        ...

    def list_crawls(self) -> Rows: ...

    def counts(self, crawl_id: int) -> CrawlCounts: ...

    def top_hosts(self, crawl_id: int, limit: int) -> list[HostCount]: ...

    def latencies(self, crawl_id: int) -> tuple[int, Iterator[float]]:
        """How many pages have a latency, and their latencies in ascending order (streamed)."""
        ...

    def host_latencies(
        self, crawl_id: int, hosts: int
    ) -> tuple[dict[str, int], Iterator[tuple[str, float]]]:
        """The `hosts` hosts with most latencies measured (busiest first, with how many), and
        every (host, latency) of the crawl, ordered by host and then latency (streamed)."""
        ...

    def fetch_span(self, crawl_id: int) -> float | None:
        """Seconds from the crawl's first stored fetch to its last (None: no pages)."""
        ...

    def pages_per_bucket(self, crawl_id: int, width: float) -> dict[int, int]:
        """Pages stored per `width` seconds since the first fetch (bucket number -> pages)."""
        ...

    def status_counts(self, crawl_id: int) -> list[tuple[str, int]]: ...

    def depth_counts(self, crawl_id: int) -> list[tuple[int, int]]: ...

    def content_type_counts(self, crawl_id: int) -> list[tuple[str | None, int]]: ...

    def limits(self, crawl_id: int) -> CrawlLimits: ...

    def errors_by_kind(self, crawl_id: int) -> list[tuple[str, int, str, str | None]]:
        """(error_kind, pages, an example URL, its error) per kind, most pages first."""
        ...

    def error_pages(self, crawl_id: int, limit: int) -> list[tuple[Any, ...]]:
        """(url, status, error_kind, error, referrer) of pages with an error."""
        ...

    def pages(self, crawl_id: int | None) -> Rows:
        """Every page (of one crawl, or all), all columns, in the order stored."""
        ...

    def field_names(self, crawl_id: int | None) -> list[str]:
        """Every name an [extract] rule stored a value under, sorted."""
        ...

    def seeds(self) -> list[str]:
        """The seeds of every crawl, as stored (JSON lists)."""
        ...

    def items(self, crawl_id: int | None, *, after: int = 0, limit: int | None = None) -> Rows:
        """A spider's items (id, url, position, callback, data as JSON text), of one crawl or
        all, in the order stored; `after`: only those with a greater id; `limit`: at most."""
        ...

    def item_counts(self, crawl_id: int) -> tuple[list[tuple[str, int]], int]:
        """The crawl's items per callback (most first), and how many of its pages have any."""
        ...

    def worker_shares(self, crawl_id: int) -> list[tuple[str, int, str]]:
        """(worker, pages it stored, its state) of each process that worked on the crawl, most
        pages first; none on a backend with one process per crawl."""
        ...

    def preset_sql(self, name: str, sql: str) -> str:
        """The named query `name` (a preset) as this backend runs it: `sql` is its text in
        SQLite's dialect, as docs/guides/database.md shows it (store/dialect.py has the others)."""
        ...

    def run_query(self, sql: str, *, timeout: float | None = None) -> Rows:
        """One statement of the user's, read-only: a statement that writes is refused
        (QueryError), as is bad SQL, and one running past `timeout` seconds is stopped
        (QueryError). Ctrl-C interrupts it (KeyboardInterrupt)."""
        ...


ResultsOpener = AbstractContextManager[ResultsReader]
