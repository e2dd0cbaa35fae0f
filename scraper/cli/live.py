"""The live display of a crawl on a terminal (rich), drawn by a thread of its own.

Imported only when a terminal shows it: rich's progress machinery is ~0.1 s of a crawl's start,
which --quiet runs and pipes need not pay.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

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

from scraper.cli.progress import in_flight, lag, queued
from scraper.models import CrawlSnapshot
from scraper.terminal import visible


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
            (queued(s), ""),
            ("  in flight ", "dim"),
            (in_flight(s), ""),
            ("  errors ", "dim"),
            (str(s.errors), "red" if s.errors else ""),
            ("  ", ""),
            (decimal(s.bytes), ""),
            ("  loop lag p50/p99/max ", "dim"),
            (f"{lag(s)} ms", ""),
            ("  elapsed ", "dim"),
            (f"{elapsed:.0f} s", ""),
        ]
        # rich passes ESC and most control characters through to the terminal: each piece goes
        # through `visible` (counters only today, but a host name may join them).
        self._progress.details = Text.assemble(*((visible(t), style) for t, style in pieces))
