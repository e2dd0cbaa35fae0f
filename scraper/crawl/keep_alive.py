"""The keep-alive budget: which connections may stay open, idle, after their response.

aiohttp keeps every connection open 15 s after its response, so a broad crawl would hold one
idle socket per host it touched. The dispatcher lets a connection stay only if its host has work
queued that may start soon (within KEEP_HORIZON) and within a budget of idle connections (the
socket budget's rest after fetch.concurrency, `sockets.socket_budget`): open sockets stay under
fetch.concurrency plus that budget, whatever the number of hosts. A kept connection counts in the
budget until its host's next request reuses it, or the host is released (aiohttp's keep-alive
timeout closes it, at worst).
"""

from __future__ import annotations

from scraper.crawl.hosts import HostState

# A connection to a host whose next request may start within this many seconds is kept open;
# others are closed at once (under aiohttp's 15 s keep-alive, after which it closes them anyway).
KEEP_HORIZON = 10.0


class KeepAlive:
    """The idle connections kept open (`kept`), at most `budget`; counted per host too
    (`HostState.idle_kept`)."""

    __slots__ = ("budget", "kept")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.kept = 0

    def may_keep(self, host: HostState | None, now: float) -> bool:
        """May the connection of a request to `host`, about to go out, stay open after it? If
        so it is counted kept from now."""
        if host is None or host.slot is None or not (host.queue or host.jobs):
            return False
        if self.kept >= self.budget:
            return False
        if host.slot.next_start - now > KEEP_HORIZON:
            return False
        host.idle_kept += 1
        self.kept += 1
        return True

    def reused(self, host: HostState) -> None:
        """A request to `host` starts: it takes a connection kept open for it, if there is one."""
        if host.idle_kept:
            host.idle_kept -= 1
            self.kept -= 1

    def released(self, host: HostState) -> None:
        """`host` is released: the connections kept for it no longer count."""
        self.kept -= host.idle_kept
        host.idle_kept = 0
