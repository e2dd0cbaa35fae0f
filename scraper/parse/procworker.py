"""The worker's side of `procpool.py`: read a request from stdin, run it, write the reply.

    python -m scraper.parse.procworker [RING_FD RING_BYTES]

It imports no more than it needs (not asyncio, nor the crawler's modules): each worker pays its
imports once at start, and a function's module (`scraper.parse.page`) is imported when the first
request for it is unpickled.

A request is REQUEST (the pickle's length, how many out-of-band buffers), then an OOB entry
(offset, length) per buffer, then a pickle (protocol 5) of (function, argument). The buffers (a
page's body) are not in the pickle: the pool copied them into the shared-memory ring it gave this
worker (RING_FD, a memfd inherited at start), and the worker copies them out before running the
call. A reply is REPLY (its length), then a pickle of (ok, result or exception).
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import struct
import sys
from typing import Any, BinaryIO

REQUEST = struct.Struct("!II")  # the pickle's size, the number of out-of-band buffers
OOB = struct.Struct("!QQ")  # one buffer: its offset in the ring, its length
REPLY = struct.Struct("!I")  # a reply: its length, then a pickle


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
        except Exception as exc:  # the caller gets it, as ProcessPoolExecutor would give it
            reply = (False, exc)
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception (or result) that cannot be pickled
            payload = pickle.dumps((False, RuntimeError(f"unpicklable reply: {exc!r}")))
        replies.write(REPLY.pack(len(payload)))
        replies.write(payload)
        replies.flush()


def _copy(ring: mmap.mmap | None, offset: int, length: int) -> bytes:
    """A buffer out of the ring, as the bytes the call gets: the pool reuses its place once this
    request is answered, and Lexbor reads only `bytes` (~0.1 ms per 1.5 MB)."""
    if ring is None:
        raise RuntimeError("a request refers to a shared-memory ring this worker was not given")
    return ring[offset : offset + length]


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ring = None
    if len(sys.argv) == 3:
        fd, size = int(sys.argv[1]), int(sys.argv[2])
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
