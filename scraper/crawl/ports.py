"""The seams between the crawl's stages, declared once: what one stage needs of another, which the
coordinator (`crawler.py`) passes in, so no stage imports another.

    FetchStage     the fetch stage as robots.txt, sitemaps and PoliteFetch use it (Fetcher)
    WireListener   who the fetch stage tells about requests on the wire (on_the_wire.py's
                   OnTheWire: the dispatcher's side of the connection slots)
    HostRules      what robots.txt says about one host (robots.py's RobotsRules)
    HostGate       where a host's HostRules come from (robots.py's RobotsGate)
    Archiver       where exchanges are archived, with storage.warc (archive/archive.py's Archive)
"""

from __future__ import annotations

from typing import Protocol

from scraper.models import Archived, CrawlRequest, ErrorKind, Exchange, FetchResult


class FetchStage(Protocol):
    """One request through the fetch stage: its outcome, failures included, as data."""

    async def fetch(
        self,
        request: CrawlRequest,
        *,
        any_type: bool,
        time_limit: float | None = None,
        body_limit: int | None = None,
    ) -> FetchResult: ...


class WireListener(Protocol):
    """Who is told when requests go on and off the wire, and decides which connections stay
    open (the dispatcher's side of the connection slots, `on_the_wire.py`)."""

    def started(self, request: CrawlRequest, first: bool) -> None:
        """`first`: the request's first attempt (not a retry, nor a try again for sockets)."""
        ...

    def ended(self) -> None: ...

    def keep_alive(self, request: CrawlRequest) -> bool: ...

    def not_before(self, request: CrawlRequest) -> float:
        """Seconds before the request's host may see another request (for a retry)."""
        ...


class HostRules(Protocol):
    """What robots.txt says about one host (and `skip_kind`: the error kind of a URL it skips)."""

    skip_kind: ErrorKind

    @property
    def delay(self) -> float | None: ...

    @property
    def unavailable(self) -> bool: ...

    def skip_reason(self, url: str) -> str | None: ...


class HostGate(Protocol):
    """Where a host's robots.txt rules come from (robots.py's RobotsGate)."""

    async def settled_rules(self, host: str, sample_url: str) -> HostRules:
        """The rules once settled (an unavailable robots.txt asked for again, in rounds)."""
        ...

    async def adopt(self, record: str) -> None: ...


class Archiver(Protocol):
    """The WARC archive (storage.warc): writes exchanges' records, says where their response
    (or revisit) records went; raises ArchiveError when it cannot write."""

    async def write(self, exchanges: list[Exchange]) -> list[Archived]: ...
