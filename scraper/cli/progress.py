"""Progress while a crawl runs: a live rich display on a terminal, plain log lines elsewhere.

The event loop only samples the crawl's counters (`Crawler.snapshot()`: no I/O) and hands each
sample on. The terminal is written by another thread (the live display) or through the logging
queue (the plain lines), so a slow terminal never stalls the crawl.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Literal, Protocol, TextIO

from rich.console import Console, RenderableType
from rich.filesize import decimal
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

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
    view: View = LiveView() if mode == "live" else LineView()
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
        f"{done} pages, {rate:.1f} pages/s, queued {s.queued}, in flight {s.in_flight}, "
        f"errors {s.errors}, {decimal(s.bytes)}, loop lag {_lag(s)} ms, {elapsed:.0f} s"
    )
    if s.max_pages and rate > 0:
        line += f", ETA {max(0, s.max_pages - s.pages) / rate:.0f} s"
    return visible(line)  # counters only today; whatever a line gains, it shows no escape codes


def _lag(s: CrawlSnapshot) -> str:
    return f"{s.loop_lag_p50_ms:.1f}/{s.loop_lag_p99_ms:.1f}/{s.loop_lag_max_ms:.0f}"


def _fields(s: CrawlSnapshot) -> dict[str, object]:
    return {
        "pages": s.pages,
        "errors": s.errors,
        "bytes": s.bytes,
        "queued": s.queued,
        "in_flight": s.in_flight,
        "max_pages": s.max_pages,
        "loop_lag_ms": {
            "p50": s.loop_lag_p50_ms,
            "p99": s.loop_lag_p99_ms,
            "max": s.loop_lag_max_ms,
        },
    }


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.1f} pages/s", style="progress.data.speed")


class _CrawlProgress(Progress):
    """rich's progress bar plus a line of the crawl's other counters under it."""

    details: Text = Text()

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        yield self.details


class LiveView:
    """A rich display redrawn by its own thread from the latest sample the loop handed over."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = _CrawlProgress(
            TextColumn("[bold]crawling"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _Rate(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            auto_refresh=False,
            transient=True,  # the summary printed after it says it all
        )
        self._task = self._progress.add_task("pages", total=None)
        self._inbox: queue.SimpleQueue[CrawlSnapshot | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._draw, name="progress", daemon=True)

    def start(self) -> None:
        self._progress.start()
        self._thread.start()

    def show(self, snapshot: CrawlSnapshot) -> None:
        self._inbox.put(snapshot)

    def stop(self) -> None:
        self._inbox.put(None)
        self._thread.join()
        self._progress.stop()

    def _draw(self) -> None:
        while (snapshot := self._inbox.get()) is not None:
            self._update(snapshot)
            self._progress.refresh()

    def _update(self, s: CrawlSnapshot) -> None:
        self._progress.update(self._task, completed=s.pages, total=s.max_pages or None)
        elapsed = self._progress.tasks[0].elapsed or 0.0
        pieces = [
            ("queued ", "dim"),
            (str(s.queued), ""),
            ("  in flight ", "dim"),
            (str(s.in_flight), ""),
            ("  errors ", "dim"),
            (str(s.errors), "red" if s.errors else ""),
            ("  ", ""),
            (decimal(s.bytes), ""),
            ("  loop lag p50/p99/max ", "dim"),
            (f"{_lag(s)} ms", ""),
            ("  elapsed ", "dim"),
            (f"{elapsed:.0f} s", ""),
        ]
        # rich passes ESC and most control characters through to the terminal: each piece goes
        # through `visible` (counters only today, but a host name may join them).
        self._progress.details = Text.assemble(*((visible(t), style) for t, style in pieces))
