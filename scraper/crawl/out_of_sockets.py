"""Running out of sockets mid-crawl: the process's own trouble, never a page's error.

"Too many open files" (or no ephemeral port, no buffer) says the process is out of a resource
of its own, not that the site failed. The request waits and makes the same attempt again (it
counts as no retry), after a pause that doubles from 50 ms up to 2 s; and the connection slots
drop to one fewer than are open now (`WireSlots.shrink`), to climb back as connections succeed
(`WireSlots.connected`). The open-files limit itself is raised at start (`sockets.py`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import aiohttp

from scraper.crawl.wire import WireSlots
from scraper.models import FetchResult

log = logging.getLogger(__name__)

# The process is out of a resource of its own (file descriptors, ephemeral ports, buffers).
OUT_OF_SOCKETS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL}
)
PAUSE = (0.05, 2.0)  # seconds: first and longest wait before trying such a request again


class OutOfSockets(Exception):
    """The process could not open a connection: a resource of ours ran out, not the site."""


def out_of_sockets(exc: BaseException) -> bool:
    """Whether `exc`, raised while making a request, means the process is out of sockets."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        # getaddrinfo's "system error": in a crawl, a thread that could not open a socket
        return exc.os_error.errno == socket.EAI_SYSTEM
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    return isinstance(cause, OSError) and cause.errno in OUT_OF_SOCKETS


async def until_sockets(
    attempt: Callable[[bool], Awaitable[FetchResult]],
    wire: WireSlots,
    *,
    first: bool,
    url: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> FetchResult:
    """`attempt(first)`, made again (with `first` False) for as long as it raises OutOfSockets,
    after a pause that grows; each time, fewer connection slots."""
    pause, longest = PAUSE
    while True:
        try:
            return await attempt(first)
        except OutOfSockets as exc:
            first = False
            limit = wire.shrink()
            log.warning(
                "out of sockets (%s): %d requests on the wire; at most %d for now, and %s "
                "waits %.2f s",
                exc,
                wire.in_use,
                limit,
                url,
                pause,
            )
            await sleep(pause)
            pause = min(2 * pause, longest)
