"""The worker's side of `procpool.py`: read a request from stdin, run it, write the reply.

    python -m scraper.parse.procworker

It imports no more than it needs (not asyncio, nor the crawler's modules): each worker pays its
imports once at start, and a function's module (`scraper.parse.page`) is imported when the first
request for it is unpickled.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from typing import Any, BinaryIO

HEADER = struct.Struct("!I")  # each message: its length, then a pickle


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """The worker's side: run each request, reply in order, until the requests end."""
    while True:
        header = requests.read(HEADER.size)
        if len(header) < HEADER.size:
            return
        (size,) = HEADER.unpack(header)
        data = requests.read(size)
        if len(data) < size:
            return
        try:
            function, argument = pickle.loads(data)  # may fail: a function it cannot import
            reply: tuple[bool, Any] = (True, function(argument))
        except Exception as exc:  # the caller gets it, as ProcessPoolExecutor would give it
            reply = (False, exc)
        try:
            payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception (or result) that cannot be pickled
            payload = pickle.dumps((False, RuntimeError(f"unpicklable reply: {exc!r}")))
        replies.write(HEADER.pack(len(payload)))
        replies.write(payload)
        replies.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Replies get their own copy of stdout; fd 1 then points at stderr, so a stray print (here or
    # in a C library) cannot corrupt the stream of replies.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with replies:
        serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
