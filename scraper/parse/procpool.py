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
- Workers run in a process group of their own and ignore SIGINT: Ctrl-C is for the crawler,
  which decides how to stop (and stops its workers last). They stay in the crawler's session,
  so where the kernel groups CPU time by session (autogroup, the default on desktop and most
  distribution kernels) the crawl is one group, and `nice` (added to theirs) makes them yield to
  the loop. In sessions of their own each worker weighed as much as the whole crawler: with
  two workers the loop had a third of the CPU and waited for a core 1.2-5 s of a 6-10 s crawl.
- Big bytes (a page's body: what a class pickles as a `pickle.PickleBuffer`, see
  `picklable.out_of_band`) do not go through the pipe but through a shared-memory ring per worker
  (`_Ring`, a memfd): one copy on the loop instead of four. With 1.5 MB pages, sending the bodies
  down the pipes was ~45% of the event loop's time (py-spy: pickling them, joining header and
  pickle, buffering what the pipe could not take, and the pipe writes themselves), and reading
  them from the pipe cost the workers as much again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import mmap
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
# Each worker's shared-memory ring. A worker holds two batches at a time (the parse stage runs
# two tasks per worker), each up to ~2 MB of bodies plus one page: with 1.5 MB pages, two batches
# of ~3 MB and the room that wrapping around wastes. With 8 MB, 49 of 334 batches of a 614-page
# crawl went through the pipe instead (a batch a few bytes bigger than the one it follows does not
# fit where that one was); with 16 MB, none. Only the pages the ring uses cost memory (the
# crawler's peak RSS was the same): `take` keeps to its start when it can.
RING_BYTES = 16 << 20


class _Ring:
    """A worker's shared-memory ring (a memfd, mapped here and in the worker), where the bytes of
    a call are put for the worker to copy out. Space is taken in call order and given back in
    reply order, which is the same order: a ring, with no fragmentation to manage."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.fd = os.memfd_create("scraper-parse-ring", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self._held: collections.deque[tuple[int, int]] = collections.deque()  # (start, end)

    def take(self, size: int) -> int | None:
        """The offset of `size` free bytes (None: not enough room now), held until `give_back`.

        The space in use is one arc, from the oldest call's start to the newest call's end,
        wrapping past the end of the ring. A new call goes at the start of the ring whenever it
        fits before the oldest (wrapping early), else after the newest: so the ring keeps to its
        first pages, and a quiet crawl touches (and the crawler's RSS counts) few of them."""
        if not self._held:
            start = 0
            fits = size <= self.size
        else:
            oldest, newest = self._held[0][0], self._held[-1][1]
            if newest > oldest:  # in use: [oldest, newest); free: before it and after it
                start = 0 if size <= oldest else newest
                fits = start == 0 or newest + size <= self.size
            else:  # wrapped: in use from oldest to the end, and [0, newest); free between
                start = newest
                fits = newest + size <= oldest
        if not fits:
            return None
        self._held.append((start, start + size))
        return start

    def give_back(self) -> None:
        """The oldest call's bytes are no longer needed (its reply came)."""
        self._held.popleft()

    def close_fd(self) -> None:
        """Once the worker has its copy: the mapping keeps the memory (until `close`, or until
        the garbage collector takes the ring of a worker that died)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        self.close_fd()
        self.map.close()


def _make_ring() -> _Ring | None:
    if not hasattr(os, "memfd_create"):  # not Linux: everything goes through the pipe
        return None
    try:
        return _Ring(RING_BYTES)
    except OSError:
        return None


class WorkerDied(RuntimeError):
    """The worker process running a call ended before replying. `started`: the call was the
    one it was running (else it was queued behind that one, and never ran); `timed_out`: it
    ran past its time limit (`procworker.within`)."""

    def __init__(self, message: str, *, started: bool = True, timed_out: bool = False) -> None:
        super().__init__(message)
        self.started = started
        self.timed_out = timed_out


class _Worker:
    def __init__(
        self, process: asyncio.subprocess.Process, number: int, ring: _Ring | None
    ) -> None:
        self.process = process
        self.number = number
        self.ring = ring
        # Each call's future, and whether it holds space in the ring.
        self.pending: collections.deque[tuple[asyncio.Future[Any], bool]] = collections.deque()
        self.reader = asyncio.create_task(self._read_replies(), name=f"parse-worker-{number}")

    def send(self, function: Callable[[Any], Any], argument: Any) -> asyncio.Future[Any]:
        assert self.process.stdin is not None
        buffers: list[pickle.PickleBuffer] = []
        payload = pickle.dumps((function, argument), protocol=5, buffer_callback=buffers.append)
        table = self._place(buffers)
        if table is None:  # no ring, or no room in it: the whole call through the pipe
            payload = pickle.dumps((function, argument), protocol=5)
            table = []
        future = asyncio.get_running_loop().create_future()
        self.pending.append((future, bool(table)))
        header = procworker.REQUEST.pack(len(payload), len(table))
        self.process.stdin.write(header + b"".join(table) + payload)
        return future

    def _place(self, buffers: list[pickle.PickleBuffer]) -> list[bytes] | None:
        """Copy the call's out-of-band buffers into the ring; their OOB entries (None: the ring
        cannot take them now). One memcpy each: ~0.3 ms per 1.5 MB body on the loop (py-spy)."""
        if not buffers:
            return []
        views = [buffer.raw() for buffer in buffers]
        total = sum(view.nbytes for view in views)
        start = self.ring.take(total) if self.ring is not None and total else None
        if self.ring is None or start is None:
            return None
        table = []
        for view in views:
            self.ring.map[start : start + view.nbytes] = view
            table.append(procworker.OOB.pack(start, view.nbytes))
            start += view.nbytes
        return table

    async def _read_replies(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            while True:
                (size,) = procworker.REPLY.unpack(await stdout.readexactly(procworker.REPLY.size))
                ok, value = pickle.loads(await stdout.readexactly(size))
                future, in_ring = self.pending.popleft()
                if in_ring and self.ring is not None:
                    self.ring.give_back()  # the worker copied its buffers out before running it
                if future.done():  # its caller was cancelled
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except asyncio.IncompleteReadError:  # the worker is gone
            code = await self.process.wait()
            timed_out = code in (-procworker.TIMEOUT_SIGNAL, -procworker.WALL_SIGNAL)
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
            future, _ = self.pending.popleft()
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
        if self.ring is not None:
            self.ring.close()


class ProcessPool:
    """`size` worker processes, started on `async with` and stopped on leaving it."""

    def __init__(self, size: int, nice: int = 0) -> None:
        if size < 1:
            raise ValueError(f"a process pool needs at least one worker, not {size}")
        self._size = size
        self._nice = nice
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
        ring = _make_ring()
        ring_args = [str(ring.fd), str(ring.size)] if ring is not None else []
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                procworker.__name__,
                str(os.getpid()),  # its parent: the worker dies with it
                *ring_args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                process_group=0,  # a terminal's Ctrl-C goes to the crawler alone
                pass_fds=[ring.fd] if ring is not None else [],
            )
        except BaseException:
            if ring is not None:
                ring.close()
            raise
        if ring is not None:
            ring.close_fd()
        for stream in (process.stdin, process.stdout):
            _enlarge_pipe(stream)
        _add_niceness(process.pid, self._nice)
        return _Worker(process, self._started, ring)


def _add_niceness(pid: int, nice: int) -> None:
    """Lower a worker's priority by `nice` below the crawler's (raising it needs privileges;
    a worker already gone is the caller's to notice)."""
    if nice <= 0:
        return
    with contextlib.suppress(OSError):
        mine = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, pid, min(19, mine + nice))


def _enlarge_pipe(stream: asyncio.StreamWriter | asyncio.StreamReader | None) -> None:
    """A batch of pages is a few hundred KB: with Linux's default 64 KB pipe it would cross in
    several writes, each waking the other side. Ask for PIPE_SIZE (the kernel may refuse)."""
    transport = getattr(stream, "transport", None) or getattr(stream, "_transport", None)
    pipe = transport.get_extra_info("pipe") if transport is not None else None
    if pipe is None or not hasattr(fcntl, "F_SETPIPE_SZ"):
        return
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
