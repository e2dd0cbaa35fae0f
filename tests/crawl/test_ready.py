"""The ready heap alone: which slot may start now, on times passed in (no clock, no sleeps)."""

from __future__ import annotations

from scraper.crawl.hosts import ALLOW_ALL, HostState, Limits, Slot
from scraper.crawl.ready import ReadyHeap
from scraper.models import CrawlRequest


def host_with_work(name: str, slot: Slot, urls: int = 1) -> HostState:
    host = HostState(name)
    host.slot, host.rules = slot, ALLOW_ALL
    host.queue.extend(CrawlRequest(f"http://{name}/{n}") for n in range(urls))
    return host


def test_the_slot_whose_next_start_is_earliest_goes_first_and_not_before_its_time() -> None:
    ready = ReadyHeap()
    late, early = Slot("late", Limits()), Slot("early", Limits())
    late.next_start, early.next_start = 5.0, 2.0
    ready.add(host_with_work("late", late))
    ready.add(host_with_work("early", early))
    assert ready.pick(1.0) == (None, None, 2.0)  # nothing may start yet: wake at 2
    slot, host, _ = ready.pick(2.0)
    assert slot is early and host is not None and host.name == "early"


def test_a_slot_whose_delay_moved_on_is_put_back_at_its_new_time() -> None:
    ready = ReadyHeap()
    slot = Slot("a", Limits())
    ready.add(host_with_work("a", slot))
    slot.next_start = 3.0  # a start, or a throttle, after it went in at 0
    assert ready.pick(1.0) == (None, None, 3.0)
    assert ready.pick(3.0)[0] is slot


def test_a_full_slot_leaves_the_heap_until_offered_again() -> None:
    ready = ReadyHeap()
    slot = Slot("a", Limits(per_host_concurrency=1))
    host = host_with_work("a", slot, urls=2)
    ready.add(host)
    assert ready.pick(0.0)[0] is slot
    ready.rotate(slot, host)
    slot.active = 1  # its one request is out
    ready.offer(slot)
    assert ready.pick(0.0) == (None, None, None)
    slot.active = 0
    ready.offer(slot)
    assert ready.pick(0.0)[0] is slot


def test_hosts_of_one_slot_take_turns() -> None:
    ready = ReadyHeap()
    slot = Slot("example.com", Limits())
    a, b = host_with_work("a.example.com", slot, 2), host_with_work("b.example.com", slot, 2)
    ready.add(a)
    ready.add(b)
    order = []
    for _ in range(4):
        _, host, _ = ready.pick(0.0)
        assert host is not None
        order.append(host.name)
        host.queue.popleft()
        ready.rotate(slot, host)
        ready.offer(slot)
    assert order == ["a.example.com", "b.example.com"] * 2
    assert ready.pick(0.0) == (None, None, None)  # no host has work left
    assert not a.in_ring and not b.in_ring


def test_a_host_without_rules_yet_waits() -> None:
    ready = ReadyHeap()
    slot = Slot("a", Limits())
    host = host_with_work("a", slot)
    host.rules = None  # its robots.txt is being read
    ready.add(host)
    assert ready.pick(0.0) == (None, None, None)
