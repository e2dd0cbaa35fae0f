"""The host window: which hosts the dispatcher holds in memory, and how more are paged in.

A broad crawl has more hosts than memory should hold: the dispatcher holds at most
`Limits.host_window` of them (crawl.queue_size), and only while they have work. The rest stay in
the frontier table, and come in through this process's `HostLeases` (`leases.py`, whatever the
backend: one process is a fleet of one):

- **claimed**, a batch at a time, once a tenth of the window is free and a claim may find some
  (`more`: the last claim came back full, or a host was found with no room to take it);
- **taken** at once, when this process's own stored pages find a host not held and the window
  has room (where the backend can: SQLite);
- **drained** when this process holds more than its fair share (others joined the crawl, or ran
  out of hosts): nothing more is sent there, and it goes back once it has nothing in hand. Only
  as many as leave this process's fetch slots filled (`leases.hosts_to_drain`).

The dispatcher (`scheduler.py`) starts the claims as tasks of its own and takes the hosts on;
this holds the window's bookkeeping only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from scraper.crawl.hosts import HostState, HostTable
from scraper.crawl.leases import hosts_to_drain
from scraper.store.base import HostLeases, HostPoliteness


class PageBudget(Protocol):
    """What the window needs of the frontier: whether crawl.max_pages is spent."""

    @property
    def spent(self) -> bool: ...


class HostWindow:
    """At most `size` hosts held (`hosts`), paged in from `leases`; `concurrency`: the fetch
    slots the hosts kept must fill when some are drained."""

    __slots__ = (
        "_claiming",
        "_concurrency",
        "_frontier",
        "_hosts",
        "_leases",
        "draining",
        "more",
        "size",
    )

    def __init__(
        self,
        hosts: HostTable,
        leases: HostLeases,
        frontier: PageBudget,
        *,
        size: int,
        concurrency: int,
    ) -> None:
        self.size = size
        self.more = False  # a claim may find hosts with pending URLs that are not held
        self.draining: set[str] = set()  # being handed back: sent nothing more till released
        self._hosts = hosts
        self._leases = leases
        self._frontier = frontier
        self._concurrency = concurrency
        self._claiming = False

    @property
    def held(self) -> int:
        """Hosts held and not being handed back."""
        return len(self._hosts) - len(self.draining)

    def wanted(self) -> int:
        """How many more hosts to hold: as many as the window has room for (the fair share
        caps it, `leases.keep_leases`), none once the page budget is spent. The fetch slots
        spread over all of them, so the crawl's hosts progress together and finish together,
        as on one process. Claiming only what the slots need drains a few hosts at a time at
        their per-host limit and leaves the rest unclaimed while another process idles: the
        crawl's last hosts then run alone at per_host_concurrency, which added a third to a
        4-worker crawl's time."""
        if self._frontier.spent:
            return 0
        return max(0, self.size - len(self._hosts))

    def may_take(self, name: str) -> bool:
        """A host not held may have pending URLs (this process's stored pages found them): is it
        ours to hold now? Not without room (it waits in the table for a claim), nor if another
        process holds it (its owner finds them)."""
        if len(self._hosts) >= self.size:
            self.more = True
            return False
        return self._leases.take(name) is not None

    def batch_due(self) -> int:
        """Room for a batch of hosts, if a claim is due now (a claim may find some, none is
        running, and a tenth of the window is free: hosts come in batches, not a statement
        each); 0 if none is. The caller runs `claim_batch(room)`."""
        if not self.more or self._claiming or self._frontier.spent:
            return 0
        room = self.size - len(self._hosts)
        if room < max(1, self.size // 10):
            return 0
        self._claiming = True
        return room

    async def claim_batch(self, room: int) -> list[HostPoliteness]:
        """The claim `batch_due` asked for."""
        try:
            return await self.claim(room)
        finally:
            self._claiming = False

    async def claim(self, limit: int) -> list[HostPoliteness]:
        """Claim up to `limit` hosts. Fewer than asked: none is left to claim now (more may
        come: this process's stored pages, other processes)."""
        grants = await self._leases.claim(limit) if limit > 0 else []
        self.more = len(grants) >= limit > 0
        return grants

    def drain(self, count: int, in_hand: Callable[[HostState], int]) -> list[HostState]:
        """Up to `count` held hosts to hand back (over the fair share), as long as those left
        fill the fetch slots; the ones with the least `in_hand` first. Each is draining from
        now until `released`. (Not at a moment when it has nothing active: a busy host may
        never have one, so it would never go back.)"""
        held = [host for host in self._hosts.held() if host.name not in self.draining]
        chosen = hosts_to_drain(self._concurrency, held, count, in_hand)
        self.draining.update(host.name for host in chosen)
        return chosen

    def released(self, name: str) -> bool:
        """`name` was released: whether a host from the table may come into its room."""
        self.draining.discard(name)
        return self.more
