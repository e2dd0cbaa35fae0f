"""The resolver: one look-up per name per fetch.dns_ttl, shared by concurrent requests; names
from fetch.resolve's table; failures not cached."""

from __future__ import annotations

import asyncio
import socket

from aiohttp.abc import AbstractResolver, ResolveResult

from helpers import crawl_with, rows
from scraper.crawl.dns import CachingResolver, StaticResolver, address_of


class Counting(AbstractResolver):
    """A real resolver (names from a table) that counts the look-ups it answers, slowly."""

    def __init__(self) -> None:
        self.inner = StaticResolver({"a.test": "127.0.0.1", "b.test": "127.0.0.2"}, None)
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        await asyncio.sleep(0.01)
        return await self.inner.resolve(host, port, family)

    async def close(self) -> None:
        pass


async def test_names_are_cached_for_their_ttl_and_looked_up_once_at_a_time() -> None:
    counting = Counting()
    cache = CachingResolver(counting, ttl=0.2)
    answers = await asyncio.gather(*(cache.resolve("a.test", 80) for _ in range(50)))
    assert counting.calls == 1  # fifty requests at once: one look-up
    assert {answer[0]["host"] for answer in answers} == {"127.0.0.1"}
    assert (await cache.resolve("a.test", 443))[0]["port"] == 443  # another port, no look-up
    assert counting.calls == 1
    await asyncio.sleep(0.25)
    await cache.resolve("a.test", 80)
    assert counting.calls == 2  # the TTL passed


async def test_a_failed_look_up_is_not_cached() -> None:
    counting = Counting()
    cache = CachingResolver(counting, ttl=60)
    for _ in range(2):
        try:
            await cache.resolve("nowhere.test")
        except OSError as exc:
            assert exc.errno == socket.EAI_NONAME
    assert counting.calls == 2


async def test_the_address_of_a_host() -> None:
    cache = CachingResolver(Counting(), ttl=60)
    assert await address_of(cache, "b.test") == "127.0.0.2"
    assert await address_of(cache, "127.0.0.9") == "127.0.0.9"  # a literal is its own
    assert await address_of(cache, "[::1]") == "::1"
    assert await address_of(cache, "nowhere.test") is None


async def test_a_host_whose_name_does_not_resolve_is_recorded_as_dns_at_once(make_config):
    """Its robots.txt cannot be asked for: its URLs are stored with error_kind 'dns' at once,
    not after rounds of asking again (as for a host that answers 5xx)."""
    config = make_config(["http://nowhere.test/", "http://nowhere.test/a"])
    summary = await crawl_with(config, resolver=StaticResolver({}, None))
    assert summary.by_error == {"dns": 2}
    stored = await rows(config.storage.db, "SELECT attempts, error FROM pages")
    assert {attempts for attempts, _ in stored} == {0}
    assert all("cannot resolve nowhere.test" in error for _, error in stored)
