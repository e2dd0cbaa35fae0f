"""The connection slots: a bound that holds, shrinks when sockets run out, and grows back."""

from __future__ import annotations

import asyncio

from scraper.crawl.wire import SOCKETS_RECOVERY, Everyone, WireSlots
from scraper.models import CrawlRequest


async def test_no_more_than_the_limit_are_on_the_wire_and_the_next_goes_on_a_release() -> None:
    slots = WireSlots(2)
    await slots.acquire()
    await slots.acquire()
    third = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert not third.done() and slots.in_use == 2
    slots.release()
    await third
    assert slots.in_use == 2


async def test_waiters_are_served_in_order() -> None:
    slots = WireSlots(1)
    await slots.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await slots.acquire()
        order.append(n)

    waiting = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    for _ in range(3):
        slots.release()
        await asyncio.sleep(0)
    await asyncio.gather(*waiting)
    assert order == [0, 1, 2]


async def test_a_waiter_cancelled_on_its_turn_passes_the_turn_on() -> None:
    slots = WireSlots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # the first waiter's turn...
    first.cancel()  # ...which it never takes
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert slots.in_use == 1


async def test_out_of_sockets_the_limit_drops_below_what_is_open_then_climbs_back() -> None:
    slots = WireSlots(4)
    for _ in range(3):
        await slots.acquire()
    assert slots.shrink() == 2  # one fewer than are open
    slots.release()
    slots.release()
    assert slots.shrink() == 1 and slots.shrink() == 1  # never below one
    for _ in range(SOCKETS_RECOVERY - 1):
        slots.connected()
    assert slots.limit == 1
    slots.connected()
    assert slots.limit == 2
    for _ in range(10 * SOCKETS_RECOVERY):
        slots.connected()
    assert slots.limit == slots.configured == 4  # never past what was configured


async def test_a_slot_given_back_wakes_a_waiter() -> None:
    slots = WireSlots(2)
    await slots.acquire()
    await slots.acquire()
    slots.shrink()  # limit 1 with 2 in use
    slots.release()
    waiter = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()  # 1 in use, at the lowered limit
    for _ in range(SOCKETS_RECOVERY):
        slots.connected()
    await asyncio.wait_for(waiter, 1)
    assert (slots.in_use, slots.limit) == (2, 2)


def test_with_no_dispatcher_every_connection_stays_open_and_nothing_waits() -> None:
    everyone, request = Everyone(), CrawlRequest("http://127.0.0.1/")
    everyone.started(request, True)
    everyone.ended()
    assert everyone.keep_alive(request) and everyone.not_before(request) == 0.0
