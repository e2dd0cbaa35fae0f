"""Worker processes that the event loop talks to through their stdin and stdout, for CPU work.

    async with ProcessPool(2) as pool:
        result = await pool.run(function, argument)  # a top-level function, picklable values

Why not `concurrent.futures.ProcessPoolExecutor`: each of its calls crosses a feeder thread, a
shared pipe guarded by a lock, and a result-manager thread before it reaches the loop, and the
three threads contend for the GIL with the loop itself. Measured on the benchmark site, a round
trip cost about as much CPU as parsing a 40 KB page. Here each worker is a child process with two
plain pipes: the loop writes a length-prefixed pickle to its stdin (asyncio's non-blocking
transport) and reads replies from its stdout (a StreamReader), with no thread in between. The
worker's side is `procworker.py`, which imports nothing of asyncio's.

- A worker's replies come in the order of its requests, so each keeps a FIFO of futures.
- A call goes to the worker with the fewest calls outstanding.
- A worker ends when its stdin closes (when the pool closes), and when the crawler dies, kill -9
  included, even in the middle of a call: the kernel kills it (PR_SET_PDEATHSIG, on Linux). So no
  worker outlives the crawl.
- A call may carry a CPU time limit (`procworker.within`): a worker over it is ended by the
  kernel, and its calls fail with `WorkerDied` whose `timed_out` is true.
- A worker that dies (a crash in a C extension, say, or the OOM killer) fails its outstanding
  calls (the one it was running and any queued behind it) with `WorkerDied` and is replaced; the
  other workers go on. So does one whose reply cannot be unpickled: it is killed.
- Workers run in a session of their own and ignore SIGINT: Ctrl-C is for the crawler, which
  decides how to stop (and stops its workers last).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import pickle
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import scraper.parse.procworker as procworker

J = TypeVar("J")
R = TypeVar("R")

_STOP_WAIT = 5.0  # seconds a worker gets to exit once its stdin is closed
PIPE_SIZE = 1 << 20  # Linux's default limit for an unprivileged process (fs.pipe-max-size)


class WorkerDied(RuntimeError):
    """The worker process running a call ended before replying. `started`: the call was the
    one it was running (else it was queued behind that one, and never ran); `timed_out`: it
    ran past its time limit (`procworker.within`)."""

    def __init__(self, message: str, *, started: bool = True, timed_out: bool = False) -> None:
        super().__init__(message)
        self.started = started
        self.timed_out = timed_out


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process, number: int) -> None:
        self.process = process
        self.number = number
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.reader = asyncio.create_task(self._read_replies(), name=f"parse-worker-{number}")

    def send(self, function: Callable[[Any], Any], argument: Any) -> asyncio.Future[Any]:
        assert self.process.stdin is not None
        payload = pickle.dumps((function, argument), protocol=pickle.HIGHEST_PROTOCOL)
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        self.process.stdin.writelines([procworker.HEADER.pack(len(payload)), payload])
        return future

    async def _read_replies(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while True:
                (size,) = procworker.HEADER.unpack(await stdout.readexactly(procworker.HEADER.size))
                ok, value = pickle.loads(await stdout.readexactly(size))
                future = self.pending.popleft()
                if future.done():  # its caller was cancelled
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except asyncio.IncompleteReadError:  # the worker is gone
            code = await self.process.wait()
            timed_out = code == -procworker.TIMEOUT_SIGNAL
            if timed_out:
                why = f"parse worker {self.number} ran out of time on a call and was ended"
            else:
                why = f"parse worker {self.number} exited (code {code})"
        except Exception as exc:  # a reply that cannot be read: the stream is lost
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
            why = f"parse worker {self.number} sent a reply that cannot be read ({exc!r})"
            timed_out = False
        started = True  # the oldest call is the one it was running; the others waited
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                died = WorkerDied(why, started=started, timed_out=timed_out and started)
                future.set_exception(died)
            started = False

    async def stop(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        try:
            async with asyncio.timeout(_STOP_WAIT):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        await self.reader


class ProcessPool:
    """`size` worker processes, started on `async with` and stopped on leaving it."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a process pool needs at least one worker, not {size}")
        self._size = size
        self._workers: list[_Worker] = []
        self._started = 0
        self._closing = False
        self._replacing = asyncio.Lock()

    async def __aenter__(self) -> Self:
        self._workers = list(await asyncio.gather(*(self._start() for _ in range(self._size))))
        # One round trip each: a worker that answers has its signal handling set up.
        await asyncio.gather(*(worker.send(int, "0") for worker in self._workers))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        workers, self._workers = self._workers, []
        await asyncio.gather(*(worker.stop() for worker in workers))

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    async def run(self, function: Callable[[J], R], argument: J) -> R:
        """`function(argument)` in a worker process; its exception, if it raises, is raised here."""
        if not self._workers:
            raise RuntimeError("ProcessPool used outside `async with`")
        while True:
            worker = min(self._workers, key=lambda w: len(w.pending))
            if not worker.reader.done():
                break
            await self._replace(worker)  # it died: replace it before sending it more
        result: R = await worker.send(function, argument)
        return result

    async def _replace(self, dead: _Worker) -> None:
        async with self._replacing:
            if dead not in self._workers:
                return  # another call replaced it meanwhile
            if self._closing:
                raise WorkerDied("the pool is closing")
            fresh = await self._start()
            if self._closing or dead not in self._workers:  # closed while it started
                await fresh.stop()
                raise WorkerDied("the pool is closing")
            self._workers[self._workers.index(dead)] = fresh

    async def _start(self) -> _Worker:
        self._started += 1
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            procworker.__name__,
            str(os.getpid()),  # its parent: the worker dies with it
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C goes to the crawler alone
        )
        for stream in (process.stdin, process.stdout):
            _enlarge_pipe(stream)
        return _Worker(process, self._started)


def _enlarge_pipe(stream: asyncio.StreamWriter | asyncio.StreamReader | None) -> None:
    """A batch of pages is a few hundred KB: with Linux's default 64 KB pipe it would cross in
    several writes, each waking the other side. Ask for PIPE_SIZE (the kernel may refuse)."""
    transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
    pipe = transport.get_extra_info("pipe") if transport is not None else None
    if pipe is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
