"""The ready heap: the slots that have work, keyed on the moment each may start its next request.

A hand-out costs O(log slots), whatever the number of hosts: no scan over hosts per hand-out, per
wake-up or at the end check. An entry may be early, never late: a slot whose next start moved on
(a start, a throttle) is put back at its new time when it reaches the top, and a slot that is
full or has no host with work leaves the heap until `offer` brings it back. Within a slot, its
hosts take turns (the slot's ring), so one busy host of a domain does not starve the others.

Pure bookkeeping over `hosts.py`'s Slot and HostState, with `now` passed in: no clock, no I/O.
"""

from __future__ import annotations

import heapq
import itertools

from scraper.crawl.hosts import HostState, Slot


class ReadyHeap:
    """Slots with work by their next start; `pick` the one that may start now."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Slot]] = []
        self._order = itertools.count()  # ties in order of arrival

    def __len__(self) -> int:
        """Entries in the heap (stale ones included)."""
        return len(self._heap)

    def add(self, host: HostState) -> None:
        """The host may have work now: a place in its slot's ring, and the slot one here."""
        slot = host.slot
        if slot is None or not host.has_work():
            return
        if not host.in_ring:
            host.in_ring = True
            slot.ring.append(host)
        self.offer(slot)

    def offer(self, slot: Slot) -> None:
        """Put the slot in, at its next start, if it is out and has room and a host in turn."""
        if slot.heap_at is None and slot.ring and slot.active < slot.concurrency:
            slot.heap_at = slot.next_start
            heapq.heappush(self._heap, (slot.next_start, next(self._order), slot))

    def pick(self, now: float) -> tuple[Slot | None, HostState | None, float | None]:
        """The slot that may start now and its next host in turn; or None and the moment the
        earliest slot will be ready (None: no slot has work)."""
        heap = self._heap
        while heap:
            at, _, slot = heap[0]
            if slot.heap_at != at:  # a stale entry: the slot was put back at another time
                heapq.heappop(heap)
                continue
            if slot.active >= slot.concurrency or not slot.ring:
                heapq.heappop(heap)
                slot.heap_at = None  # back in when a request ends or work comes
                continue
            if slot.next_start > at:  # its delay moved on (a start, a throttle): later
                slot.heap_at = slot.next_start
                heapq.heapreplace(heap, (slot.next_start, next(self._order), slot))
                continue
            if at > now:
                return None, None, at
            ring = slot.ring
            while ring and not ring[0].has_work():
                ring.popleft().in_ring = False
            if not ring:
                heapq.heappop(heap)
                slot.heap_at = None
                continue
            return slot, ring[0], None
        return None, None, None

    def rotate(self, slot: Slot, host: HostState) -> None:
        """After a hand-out from `host` (the slot `pick` returned, its host in turn): the turn
        goes to the slot's next host, this one keeps a place at the back if it has more, and
        the slot leaves the heap until `offer` puts it back at its new next start."""
        ring = slot.ring
        ring.popleft()
        if host.has_work():
            ring.append(host)
        else:
            host.in_ring = False
        heapq.heappop(self._heap)
        slot.heap_at = None
