"""Progress while a crawl runs: a live rich display on a terminal, plain log lines elsewhere.

The event loop only samples the crawl's counters (`Crawler.snapshot()`: no I/O) and hands each
sample on. The terminal is written by another thread (the live display) or through the logging
queue (the plain lines), so a slow terminal never stalls the crawl.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal, Protocol, TextIO

from rich.filesize import decimal

from scraper.models import CrawlSnapshot
from scraper.terminal import visible

log = logging.getLogger("scraper.progress")

Mode = Literal["live", "lines", "off"]
LIVE_PERIOD = 0.25  # seconds between two samples for the live display


def choose_mode(*, quiet: bool, stream: TextIO) -> Mode:
    """Nothing with --quiet; the live display on a terminal; plain lines in CI and pipes."""
    if quiet:
        return "off"
    return "live" if stream.isatty() else "lines"


class View(Protocol):
    def start(self) -> None: ...

    def show(self, snapshot: CrawlSnapshot) -> None:
        """Called on the event-loop thread: must not block."""
        ...

    def stop(self) -> None: ...


@contextlib.asynccontextmanager
async def show_progress(
    sample: Callable[[], CrawlSnapshot], mode: Mode, interval: float
) -> AsyncIterator[None]:
    """Show the crawl's progress in `mode` while the block runs (a plain line every `interval`
    seconds off a terminal)."""
    if mode == "off":
        yield
        return
    if mode == "live":
        from scraper.cli.live import LiveView  # rich's display: only when a terminal shows it

        view: View = LiveView()
    else:
        view = LineView()
    period = LIVE_PERIOD if mode == "live" else interval
    await asyncio.to_thread(view.start)
    sampler = asyncio.create_task(_sample_every(period, sample, view), name="progress")
    try:
        yield
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await asyncio.to_thread(view.stop)


async def _sample_every(period: float, sample: Callable[[], CrawlSnapshot], view: View) -> None:
    while True:
        await asyncio.sleep(period)
        view.show(sample())


class LineView:
    """One log line per sample: what CI logs and `tee` want (and JSON with --log-format json)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._last: tuple[float, int] = (0.0, 0)

    def start(self) -> None:
        # These lines are the progress display off a terminal, so they show at any --log-level;
        # --quiet is how to silence them.
        log.setLevel(logging.INFO)
        self._started = time.monotonic()
        self._last = (self._started, 0)

    def show(self, snapshot: CrawlSnapshot) -> None:
        now = time.monotonic()
        then, pages_then = self._last
        self._last = (now, snapshot.pages)
        rate = (snapshot.pages - pages_then) / (now - then) if now > then else 0.0
        log.info(
            format_line(snapshot, rate, now - self._started),
            extra={"progress": {"rate": round(rate, 2), **_fields(snapshot)}},
        )

    def stop(self) -> None:
        pass


def format_line(s: CrawlSnapshot, rate: float, elapsed: float) -> str:
    """e.g. `120/200 pages, 38.2 pages/s, queued 80, in flight 16, errors 3, 1.2 MB,
    loop lag 0.4/7.5/30 ms, 12 s` (the loop's lag: p50/p99/max so far)."""
    done = f"{s.pages}/{s.max_pages}" if s.max_pages else f"{s.pages}"
    line = (
        f"{done} pages, {rate:.1f} pages/s, queued {queued(s)}, in flight {in_flight(s)}, "
        f"errors {s.errors}, {decimal(s.bytes)}, loop lag {lag(s)} ms, {elapsed:.0f} s"
    )
    if s.max_pages and rate > 0:
        line += f", ETA {max(0, s.max_pages - s.pages) / rate:.0f} s"
    return visible(line)  # counters only today; whatever a line gains, it shows no escape codes


def queued(s: CrawlSnapshot) -> str:
    """The crawl's URLs not yet fetched (its frontier's pending ones counted up to a bound), and
    in a fleet this process's beside them: `5210 (here 40)`."""
    crawl = f"{s.queued}+" if s.queued_capped else f"{s.queued}"
    return f"{crawl} (here {s.here_queued})" if s.processes > 1 else crawl


def in_flight(s: CrawlSnapshot) -> str:
    """The crawl's requests on the wire, and in a fleet this process's: `12 (here 4)`."""
    return f"{s.in_flight} (here {s.here_in_flight})" if s.processes > 1 else f"{s.in_flight}"


def lag(s: CrawlSnapshot) -> str:
    return f"{s.loop_lag_p50_ms:.1f}/{s.loop_lag_p99_ms:.1f}/{s.loop_lag_max_ms:.0f}"


def _fields(s: CrawlSnapshot) -> dict[str, object]:
    return {
        "pages": s.pages,
        "errors": s.errors,
        "bytes": s.bytes,
        "queued": s.queued,
        "in_flight": s.in_flight,
        "queued_capped": s.queued_capped,
        "processes": s.processes,
        "here": {"queued": s.here_queued, "in_flight": s.here_in_flight},
        "max_pages": s.max_pages,
        "loop_lag_ms": {
            "p50": s.loop_lag_p50_ms,
            "p99": s.loop_lag_p99_ms,
            "max": s.loop_lag_max_ms,
        },
    }
