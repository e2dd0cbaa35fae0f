"""Standard logging for the command line: stderr and an optional file, as text or JSON lines.

Records go through a queue to a listener thread, so the event-loop thread never waits on a write.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TextIO

from scraper.errors import OutputError
from scraper.terminal import visible

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _CurrentStderr(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time of the record: while the live progress display
    runs, rich swaps in a proxy that prints above the display instead of through it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


class VisibleFormatter(logging.Formatter):
    """The text format, with what would act on a terminal shown as escapes (`terminal.visible`):
    a log line carries URLs, host names and servers' words. A traceback after it keeps its line
    breaks (it is ours)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))


def formatter(fmt: LogFormat) -> logging.Formatter:
    if fmt == "json":  # JSON escapes control characters by itself
        from pythonjsonlogger.json import JsonFormatter  # only then: ~12-50 ms of a crawl's start

        return JsonFormatter(
            "%(levelname)s %(name)s %(message)s",
            timestamp="time",  # ISO 8601, UTC
            rename_fields={"levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )
    return VisibleFormatter(TEXT_FORMAT)


def open_log_file(path: Path) -> logging.FileHandler:
    """A handler appending to `path` (its folder is created), or one clear OutputError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return logging.FileHandler(path, mode="a", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"--log-file {path}: cannot write there: {exc.strerror}") from None


@contextlib.contextmanager
def setup_logging(
    level: str = "WARNING", file: Path | None = None, fmt: LogFormat = "text"
) -> Iterator[None]:
    """Route every record to stderr (and `file`), formatted as `fmt`, for the block's duration."""
    handlers: list[logging.Handler] = [_CurrentStderr()]
    if file is not None:
        handlers.append(open_log_file(file))
    for handler in handlers:
        handler.setFormatter(formatter(fmt))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, *handlers)
    queue_handler = logging.handlers.QueueHandler(records)
    root = logging.getLogger()
    root.addHandler(queue_handler)
    root.setLevel(level)
    listener.start()
    try:
        yield
    finally:
        listener.stop()
        root.removeHandler(queue_handler)
        for handler in handlers:
            handler.close()
