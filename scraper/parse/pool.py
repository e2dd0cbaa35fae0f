"""The parse stage's handle on the event loop: the worker processes that run `parse.py`.

`ParsePool` starts them (`procpool.ProcessPool`) and warms them up, or, with
`parse.workers = 0`, parses on the event-loop thread itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

from scraper.config import ParseConfig
from scraper.models import ParseFailure, ParseJob, ParseResult
from scraper.parse.page import parse_pages, warm_up
from scraper.parse.procpool import ProcessPool, WorkerDied
from scraper.parse.procworker import each_within, within

J = TypeVar("J")
R = TypeVar("R")


class ParsePool:
    """The worker processes behind the parse stage (`procpool.ProcessPool`, warmed up), or none
    at all with `parse.workers = 0`.

    With no workers, `run` calls the function right there, on the event-loop thread: no process
    to start, no pickling, no pipe, but nothing else on the loop runs while it parses (about 0.5 ms
    per 40 KB page, a batch at a time; a large sitemap takes longer), and no time limit applies
    (nothing can stop the loop's own thread). A thread would not help: parsing holds the GIL. So
    0 is for tiny sites, tests and one-CPU machines, never the default.
    """

    def __init__(self, config: ParseConfig) -> None:
        self._pool = ProcessPool(config.workers, config.nice) if config.workers else None
        self._timeout = config.timeout  # CPU seconds per page, or per call of `run`
        self._open = False
        self._ready: asyncio.Task[None] | None = None  # the workers' start, owned here

    @property
    def inline(self) -> bool:
        """True when parsing happens on the loop's thread (`parse.workers = 0`)."""
        return self._pool is None

    async def __aenter__(self) -> Self:
        """The workers start in the background: the crawl's first requests (robots.txt, the
        seeds) need no parser, and waiting for the workers' start and imports first put them
        all before the first request (bench/startup.py measures it)."""
        if self._pool is not None:
            self._ready = asyncio.create_task(self._start(self._pool), name="parse workers start")
        self._open = True
        return self

    @staticmethod
    async def _start(pool: ProcessPool) -> None:
        await pool.__aenter__()
        await asyncio.gather(*(pool.run(warm_up, None) for _ in pool.pids))

    async def _started(self) -> ProcessPool:
        assert self._pool is not None and self._ready is not None
        await asyncio.shield(self._ready)  # a caller cancelled must not cancel the start
        return self._pool

    async def parse_many(self, jobs: list[ParseJob]) -> list[ParseResult | ParseFailure]:
        """Parse a batch of pages in one round trip, each page within parse.timeout; a worker
        over it is ended and the call raises WorkerDied (`timed_out`)."""
        assert self._open, "ParsePool used outside `async with`"
        if self._pool is None:
            await asyncio.sleep(0)  # between two inline batches the fetchers and timers get a turn
            return parse_pages(jobs)
        await self._started()
        return await self._in_time(each_within, (self._timeout, parse_pages, jobs))

    async def run(self, function: Callable[[J], R], job: J) -> R:
        """Run a pure top-level function of picklable values in a worker process (or inline),
        within parse.timeout."""
        assert self._open, "ParsePool used outside `async with`"
        if self._pool is None:
            await asyncio.sleep(0)
            return function(job)
        await self._started()
        return await self._in_time(within, (self._timeout, function, job))

    async def _in_time(self, function: Callable[[J], R], call: J) -> R:
        """The call in a worker; sent again once if it died unstarted, queued behind a call
        that killed its worker (a page over its time, a crash)."""
        assert self._pool is not None
        try:
            return await self._pool.run(function, call)
        except WorkerDied as exc:
            if not exc.started:
                return await self._pool.run(function, call)
            if not exc.timed_out:
                raise
            why = f"took over parse.timeout ({self._timeout:g} s of CPU); its worker was ended"
            raise WorkerDied(why, timed_out=True) from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._open = False
        if self._ready is not None:  # let a start under way finish, so its workers are stopped
            with contextlib.suppress(Exception):
                await asyncio.shield(self._ready)  # its error, if any, was a caller's to see
        if self._pool is not None:
            await self._pool.__aexit__(exc_type, exc, tb)
