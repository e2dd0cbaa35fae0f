"""The crawl's queued and in-flight counts over every process on it, for the live display: this
process's gauges go to the others every few seconds through the backend (`FleetGauges`:
PostgreSQL's `workers` rows), and theirs, with the frontier's pending URLs, come back.

A few seconds apart, never per frame: the display draws four times a second from the last
exchange plus this process's own counts now. The exchange is a database round trip awaited
like any other (no blocking on the loop); one that fails costs the display its freshness, never
the crawl (the crawl's own statements say what is wrong with the database).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scraper.errors import ScraperError
from scraper.store.base import FleetGauges, FleetLoad

log = logging.getLogger(__name__)

GAUGE_PERIOD = 3.0  # seconds between two exchanges: a display's counts are at most this old


class CrawlGauges:
    """Runs the exchanges (`run`, a task its caller owns) and keeps the last one's answer."""

    def __init__(
        self,
        gauges: FleetGauges,
        mine: Callable[[], tuple[int, int]],
        *,
        count_pending: bool,
        period: float = GAUGE_PERIOD,
    ) -> None:
        """`mine()`: this process's (queued, in flight) now; `count_pending`: count the
        frontier's pending URLs too (a process that shows progress; workers run quiet)."""
        self._gauges = gauges
        self._mine = mine
        self._count_pending = count_pending
        self._period = period
        self.load = FleetLoad()  # the last exchange's answer

    async def run(self) -> None:
        while True:
            queued, in_flight = self._mine()
            try:
                self.load = await self._gauges.exchange(
                    queued, in_flight, count_pending=self._count_pending
                )
            except ScraperError as exc:
                log.debug("the fleet's gauges were not exchanged: %s", exc)
            await asyncio.sleep(self._period)
