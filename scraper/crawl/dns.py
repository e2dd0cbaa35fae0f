"""Name resolution for the fetch stage: a cache with a TTL in front of the system's resolver.

A broad crawl meets each host name a few times (robots.txt, a sitemap probe, its pages) and,
with `fetch.politeness_key = "ip"`, the dispatcher asks for its address too. `CachingResolver`
answers them all from one look-up per name per `fetch.dns_ttl` seconds, and lets concurrent
look-ups of one name share a single call. Measured here (2 cores, a name from /etc/hosts, so
without any network wait): aiohttp's ThreadedResolver (getaddrinfo in the loop's default
executor) 150 µs per look-up, 110 µs of it CPU; a cache hit 1 µs; 1,000 concurrent look-ups of
one name, one call. On the real internet a look-up also waits 10-100 ms, and the executor has
few threads (min(32, CPUs + 4)): it is the hits, not a faster resolver, that count. aiodns
(c-ares, no threads) was not adopted: a C dependency for what the cache already spares.
aiohttp's own cache is turned off in the connector (`use_dns_cache=False`), so names are cached
once, here, where the dispatcher's look-ups share it.

`StaticResolver` answers names from a table (`fetch.resolve`, as curl's --resolve: a staging
server, the benchmark's thousands of local sites, tests) and asks the next resolver for others.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections import OrderedDict

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

CACHE_SIZE = 10_000  # names: ~1 KB each with their addresses


class CachingResolver(AbstractResolver):
    """Answers from a bounded cache (LRU), each entry good for `ttl` seconds; failures are not
    cached (each request's own retries ask again)."""

    def __init__(self, inner: AbstractResolver, ttl: float, size: int = CACHE_SIZE) -> None:
        self._inner = inner
        self._ttl = ttl
        self._size = size
        self._cache: OrderedDict[tuple[str, int], tuple[float, list[ResolveResult]]]
        self._cache = OrderedDict()
        self._pending: dict[tuple[str, int], asyncio.Future[list[ResolveResult]]] = {}
        self.lookups = 0  # calls that reached the inner resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        key = (host, int(family))  # not the port: robots.txt, pages and the IP look-up share
        now = asyncio.get_running_loop().time()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return _at_port(hit[1], port)
        pending = self._pending.get(key)
        if pending is not None:
            return _at_port(await asyncio.shield(pending), port)
        future: asyncio.Future[list[ResolveResult]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            self.lookups += 1
            answer = await self._inner.resolve(host, port, family)
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning when none waits
            else:
                future.cancel()
            raise
        else:
            future.set_result(answer)
            self._cache[key] = (now + self._ttl, answer)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
            return answer
        finally:
            del self._pending[key]

    async def close(self) -> None:
        await self._inner.close()


def _at_port(answers: list[ResolveResult], port: int) -> list[ResolveResult]:
    if all(answer["port"] == port for answer in answers):
        return answers
    return [ResolveResult(**{**answer, "port": port}) for answer in answers]


class StaticResolver(AbstractResolver):
    """Names in `table` (name -> IP address) answered from it; others asked of `fallback`, or,
    with none, failing as getaddrinfo does for an unknown name."""

    def __init__(self, table: dict[str, str], fallback: AbstractResolver | None) -> None:
        self._table = {name.lower(): address for name, address in table.items()}
        self._fallback = fallback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = self._table.get(host.lower().rstrip("."))
        if address is not None:
            inet = socket.AF_INET6 if ":" in address else socket.AF_INET
            return [
                ResolveResult(hostname=host, host=address, port=port, family=inet, proto=0, flags=0)
            ]
        if self._fallback is None:
            raise OSError(socket.EAI_NONAME, f"{host}: Name or service not known")
        return await self._fallback.resolve(host, port, family)

    async def close(self) -> None:
        if self._fallback is not None:
            await self._fallback.close()


def make_resolver(table: dict[str, str], ttl: float) -> AbstractResolver:
    """The crawl's resolver: the `fetch.resolve` table, then the system's, behind the cache."""
    system: AbstractResolver = ThreadedResolver()
    inner = StaticResolver(table, system) if table else system
    return CachingResolver(inner, ttl)


async def address_of(resolver: AbstractResolver, host: str) -> str | None:
    """The first address of a host name (an IP literal is its own), or None if it has none."""
    name = host[1:-1] if host.startswith("[") else host
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(name))  # an IP literal is its own address
    try:
        answers = await resolver.resolve(name, 0, socket.AF_UNSPEC)
    except OSError:
        return None
    return str(answers[0]["host"]) if answers else None
