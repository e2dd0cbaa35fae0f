"""A lost connection to PostgreSQL: how to tell one from another error, and how long to wait
between two attempts to connect again.

A restart (`pg_ctl restart`, a minor upgrade), a failover or a pooler cutting its clients all
reach the crawl as an error on a connection that is then broken: the server's "terminating
connection due to administrator command" (57P01), a crash's 57P02, "the database system is
starting up" (57P03) while it recovers, or libpq's own "server closed the connection" /
"Connection refused". Any of these is an outage the crawl rides out (database.py); an error on a
connection that still works (a constraint, a deadlock, bad SQL) is not.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg

# The server said it is going away or not yet back: whatever the connection's state says.
GOING_AWAY = (
    psycopg.errors.AdminShutdown,
    psycopg.errors.CrashShutdown,
    psycopg.errors.CannotConnectNow,
)
# Between two attempts to connect: from FIRST_WAIT, half as long again each time, up to
# MOST_WAIT. A `pg_ctl restart` of a small server was back within 0.5-3 s here (both cores
# busy), so the first attempts come quickly (an attempt at a server that is down is refused at
# once: it costs nothing); a failover takes tens of seconds, for which one every 5 s will do.
FIRST_WAIT = 0.1
MOST_WAIT = 5.0
# How long a commit is remembered, to be looked up after an outage (the page writer's batches,
# the frontier's leases): with synchronous_commit off (backend.py) a server that crashes, `pg_ctl
# stop -m immediate` included, loses at most 3 × wal_writer_delay of commits (200 ms by default),
# counted from the server's commit, before its acknowledgement reached this process.
RECHECK = 2.0


def connection_lost(
    exc: BaseException, conn: psycopg.AsyncConnection[Any] | psycopg.Connection[Any] | None
) -> bool:
    """Did `exc` (raised by work on `conn`) come from losing the server, not from the work?"""
    if isinstance(exc, GOING_AWAY):
        return True
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    return conn is None or conn.broken or conn.closed


# What the server says while it starts up, recovers or shuts down: at connection time libpq
# gives its message without an error code, so the words tell.
RESTARTING = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "terminating connection due to administrator command",
)


def is_restarting(exc: psycopg.Error) -> bool:
    """Does the server say it is going down or coming up (not "no such server")?"""
    return isinstance(exc, GOING_AWAY) or any(words in str(exc) for words in RESTARTING)


def next_wait(wait: float) -> float:
    """The wait after `wait`: half as long again, up to MOST_WAIT, with a tenth of jitter so
    that a fleet's processes do not all knock at the same instant."""
    return min(MOST_WAIT, wait * 1.5) * random.uniform(0.9, 1.1)
