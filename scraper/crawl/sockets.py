"""The process's open files: the limit raised at start, and a socket budget that fits under it.

A crawl needs a socket per request on the wire (fetch.concurrency), the idle keep-alive
connections the dispatcher lets stay open, and a reserve for everything else: the database
(file, WAL, shared memory, lock), the parse workers' pipes, the loop's own, logs. The usual
default soft limit is 1,024; many systems allow more (the hard limit), and nothing is lost by
asking for it.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger(__name__)

RESERVE = 64  # open files kept for the rest (database, pipes, logs): ~20 in a crawl, measured
PER_WORKER = 4  # each parse worker: its two pipes, and its shared buffers


@dataclass(frozen=True, slots=True)
class SocketBudget:
    wire: int  # requests on the wire at once
    idle: int  # idle keep-alive connections the dispatcher may keep
    open_files: int  # the soft limit it was made for


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # some containers refuse; the budget then fits
            log.info("could not raise the open-files limit from %d: %s", soft, exc)
    return soft


def socket_budget(concurrency: int, parse_workers: int, open_files: int) -> SocketBudget:
    """Sockets that fit under `open_files`: the wire first (up to fetch.concurrency), then as
    many idle connections again; fewer, with a warning, when the limit is too low."""
    room = open_files - RESERVE - PER_WORKER * parse_workers
    wire = max(1, min(concurrency, room))
    idle = max(0, min(concurrency, room - wire))
    if wire < concurrency:
        log.warning(
            "the open-files limit (%d) allows %d requests on the wire, not fetch.concurrency = "
            "%d; raise it with `ulimit -n` to crawl faster",
            open_files,
            wire,
            concurrency,
        )
    return SocketBudget(wire=wire, idle=idle, open_files=open_files)
