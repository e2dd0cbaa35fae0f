"""The worker's side of `procpool.py`: read a request from stdin, run it, write the reply.

    python -m scraper.parse.procworker PARENT_PID [RING_FD RING_BYTES]

It imports no more than it needs (not asyncio, nor the crawler's modules): each worker pays its
imports once at start, and a function's module (`scraper.parse.page`) is imported when the first
request for it is unpickled.

A request is REQUEST (the pickle's length, how many out-of-band buffers), then an OOB entry
(offset, length) per buffer, then a pickle (protocol 5) of (function, argument). The buffers (a
page's body) are not in the pickle: the pool copied them into the shared-memory ring it gave this
worker (RING_FD, a memfd inherited at start), and the worker copies them out before running the
call. A reply is REPLY (its length), then a pickle of (ok, result or exception).

Two things end a worker without its cooperation, since a worker stuck in C code (a regular
expression backtracking, say) runs no Python signal handler and reads no stdin:
- its parent's death (PARENT_PID): the kernel sends it SIGKILL (Linux's PR_SET_PDEATHSIG), kill -9
  of the crawler included;
- a call over its time (`within`, `each_within`): a CPU timer whose signal's default action
  ends the process, which the pool sees as a worker that ran out of time (TIMEOUT_SIGNAL).
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

REQUEST = struct.Struct("!II")  # the pickle's size, the number of out-of-band buffers
OOB = struct.Struct("!QQ")  # one buffer: its offset in the ring, its length
REPLY = struct.Struct("!I")  # a reply: its length, then a pickle
# Sent by the kernel when a call has had its CPU seconds (ITIMER_PROF: user and system time, so a
# busy machine does not end a worker that was only waiting for a CPU). Its default action ends
# the process, even in the middle of C code.
TIMEOUT_SIGNAL = signal.SIGPROF
# And a call that waits instead of computing (a spider's callback asleep, or blocked on a socket)
# uses no CPU: a wall-clock timer ends it too, with room for a worker starved of CPU by a busy
# machine (`wall_limit`). SIGALRM's default action ends the process as well.
WALL_SIGNAL = signal.SIGALRM
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

A = TypeVar("A")
R = TypeVar("R")


def within(call: tuple[float, Callable[[A], R], A]) -> R:
    """`function(argument)` from `(seconds, function, argument)`, with `seconds` of CPU time:
    past them the kernel ends this worker, whatever the call is doing."""
    seconds, function, argument = call
    signal.setitimer(signal.ITIMER_PROF, seconds)
    signal.setitimer(signal.ITIMER_REAL, wall_limit(seconds))
    try:
        return function(argument)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)


def wall_limit(seconds: float) -> float:
    """The wall-clock time a call of `seconds` of CPU may take: four times as long, and ten
    seconds more (a worker runs niced, behind the crawler's loop and other processes)."""
    return 4 * seconds + 10


def each_within(call: tuple[float, Callable[[list[A]], list[R]], list[A]]) -> list[R]:
    """`function([item])` for each item of `(seconds, function, items)`, each with `seconds` of
    CPU time (so a batch of pages gets the time limit per page, at ~2 µs a page)."""
    seconds, function, items = call
    results: list[R] = []
    for item in items:
        results += within((seconds, function, [item]))
    return results


def serve(requests: BinaryIO, replies: BinaryIO, ring: mmap.mmap | None = None) -> None:
    """The worker's side: run each request, reply in order, until the requests end."""
    while True:
        header = requests.read(REQUEST.size)
        if len(header) < REQUEST.size:
            return
        size, count = REQUEST.unpack(header)
        table = requests.read(OOB.size * count)
        data = requests.read(size)
        if len(data) < size or len(table) < OOB.size * count:
            return
        try:
            buffers = [_copy(ring, *OOB.unpack_from(table, OOB.size * n)) for n in range(count)]
            # May fail: a function it cannot import.
            function, argument = pickle.loads(data, buffers=buffers)
            reply: tuple[bool, Any] = (True, function(argument))
        except (KeyboardInterrupt, SystemExit):
            raise
        # The caller gets it, as ProcessPoolExecutor would give it; BaseException too, since a
        # Rust library's panic (pyo3's PanicException) is one, and must cost a call, not the worker.
        except BaseException as exc:
            reply = (False, exc if isinstance(exc, Exception) else RuntimeError(_describe(exc)))
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception (or result) that cannot be pickled
            payload = pickle.dumps((False, RuntimeError(f"unpicklable reply: {exc!r}")))
        replies.write(REPLY.pack(len(payload)))
        replies.write(payload)
        replies.flush()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _copy(ring: mmap.mmap | None, offset: int, length: int) -> bytes:
    """A buffer out of the ring, as the bytes the call gets: the pool reuses its place once this
    request is answered, and Lexbor reads only `bytes` (~0.1 ms per 1.5 MB)."""
    if ring is None:
        raise RuntimeError("a request refers to a shared-memory ring this worker was not given")
    return ring[offset : offset + length]


def die_with(parent: int) -> None:
    """Have the kernel kill this process when `parent` dies (Linux). A worker that finds its
    parent already gone (it died before this ran) exits at once. Elsewhere, a worker ends when
    its stdin closes, which a worker stuck in a call does not see."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def main() -> None:
    if len(sys.argv) > 1:
        die_with(int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(TIMEOUT_SIGNAL, signal.SIG_DFL)  # its default action ends a call over its time
    signal.signal(WALL_SIGNAL, signal.SIG_DFL)
    ring = None
    if len(sys.argv) == 4:
        fd, size = int(sys.argv[2]), int(sys.argv[3])
        ring = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        os.close(fd)  # the mapping keeps the memory
    # Replies get their own copy of stdout; fd 1 then points at stderr, so a stray print (here or
    # in a C library) cannot corrupt the stream of replies.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with replies:
        serve(sys.stdin.buffer, replies, ring)


if __name__ == "__main__":
    main()
