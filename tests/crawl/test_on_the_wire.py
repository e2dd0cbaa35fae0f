"""The dispatcher's side of the connection slots alone: what the fetch stage tells it and asks
it, on a controlled clock (looptime: the loop's time stands still unless a timer moves it)."""

from __future__ import annotations

import pytest

from scraper.crawl.hosts import ALLOW_ALL, HostState, Limits
from scraper.crawl.keep_alive import KeepAlive
from scraper.crawl.on_the_wire import OnTheWire
from scraper.crawl.wire import WireSlots
from scraper.models import CrawlRequest


def held(wire: OnTheWire, name: str, *, queued: int = 0) -> HostState:
    host, _ = wire.hosts.hold(name)
    wire.hosts.join(host, name)
    host.rules = ALLOW_ALL
    host.queue.extend(CrawlRequest(f"http://{name}/{n}") for n in range(queued))
    return host


@pytest.mark.looptime(start=100.0)
async def test_a_request_on_the_wire_starts_its_slots_delay_and_is_no_longer_unstarted() -> None:
    wire = OnTheWire(Limits(per_host_delay=2.0))
    host = held(wire, "a.test")
    assert host.slot is not None
    wire.ledger.unstarted_request("http://a.test/1")
    wire.started(CrawlRequest("http://a.test/1"), first=False)  # a retry: counted at its first
    assert wire.ledger.unstarted == 1 and host.slot.next_start == 102.0
    wire.started(CrawlRequest("http://a.test/1"), first=True)
    assert wire.ledger.unstarted == 0
    assert wire.not_before(CrawlRequest("http://a.test/2")) == 2.0  # a retry waits for it too
    assert wire.not_before(CrawlRequest("http://other.test/")) == 0.0  # a host not held


@pytest.mark.looptime(start=100.0)
async def test_a_connection_stays_open_only_for_a_host_with_work_within_the_budget() -> None:
    wire = OnTheWire(Limits(), keep_alive=KeepAlive(1))
    held(wire, "busy.test", queued=2)
    held(wire, "idle.test")
    assert not wire.keep_alive(CrawlRequest("http://idle.test/"))
    assert wire.keep_alive(CrawlRequest("http://busy.test/0"))
    assert not wire.keep_alive(CrawlRequest("http://busy.test/1"))  # the budget is spent


async def test_there_is_room_while_slots_are_free_for_what_is_on_the_wire_and_handed_out() -> None:
    slots = WireSlots(2)
    wire = OnTheWire(Limits(), slots=slots)
    assert wire.room()
    await slots.acquire()
    wire.ledger.unstarted_request("http://a.test/")  # handed out, not on the wire yet
    assert not wire.room()
    wire.ledger.started("http://a.test/")
    assert wire.room()
    assert OnTheWire(Limits()).room()  # no slots to respect


async def test_a_request_leaving_the_wire_wakes_the_dispatcher() -> None:
    wire = OnTheWire(Limits())
    assert not wire.changed.is_set()
    wire.ended()
    assert wire.changed.is_set()
