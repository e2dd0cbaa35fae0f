"""Which addresses the crawl may connect to (fetch.block_private).

A host name is only a name: what a request reaches is the address the name resolves to when the
connection is made, and a stranger's DNS can answer anything (127.0.0.1, 10.0.0.5, the cloud
metadata service at 169.254.169.254). So the check is made where aiohttp connects:

- `GuardedResolver` wraps the connector's resolver. Of the addresses a name resolves to, those
  that are not public are dropped; if none is left, the request fails with `AddressBlocked`
  (recorded as `error_kind = 'blocked'`). A seed's own host is exempt, and its addresses are
  trusted from then on: crawling a site on this machine or the office network needs no flag.
- `AddressGuard.socket_factory` is given the address of every socket the connector opens, an IP
  literal's too (aiohttp resolves no literal), and refuses one that is neither public nor
  trusted, before any packet leaves.

DNS rebinding (a name that answers a public address to the scope check and a private one to the
connection) cannot slip past: the address checked is the address connected to, on every new
connection, and aiohttp reuses a connection only for the host it was opened for.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64, RFC 6052 and 8215):
# what they reach is that IPv4 address, so that is what is classified.
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated "::a.b.c.d"


class AddressBlocked(OSError):
    """A connection to an address fetch.block_private forbids; raised before it is made."""


def classify(address: str) -> str | None:
    """What kind of non-public address `address` is, or None for a public one: "unspecified"
    (0.0.0.0 and ::, which reach this machine), "loopback", "link-local" (169.254.0.0/16, where
    cloud metadata services answer, and fe80::/10), "multicast", "unique-local" (fc00::/7),
    "private" (10/8, 172.16/12, 192.168/16, ...), or "non-public" (anything else not globally
    routable: shared 100.64/10, benchmarking, documentation, reserved and broadcast ranges).
    An IPv6 address that embeds an IPv4 one (::ffff:a.b.c.d, 6to4, Teredo, NAT64) is the IPv4
    address it reaches. Pure: no connection, no lookup."""
    ip = _reached(ipaddress.ip_address(address.partition("%")[0]))  # without a zone ("%eth0")
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.version == 6 and ip in _UNIQUE_LOCAL:
        return "unique-local"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public"
    return None


_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _reached(ip: _Address) -> _Address:
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # (server, client): the client is who the packets reach
    if any(ip in net for net in _NAT64) or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


class AddressGuard:
    """fetch.block_private for one crawl: which addresses it may connect to.

    `trusted_hosts` are the seeds' hosts (names or IP literals, as in their URLs): whatever they
    resolve to may be connected to, by them and by any other host the scope admits."""

    def __init__(self, *, block: bool, trusted_hosts: Iterable[str] = ()) -> None:
        self.block = block
        hosts = {host.lower().strip("[]") for host in trusted_hosts}
        self._trusted_hosts = frozenset(hosts)
        self._trusted_addresses = {host for host in hosts if _is_address(host)}

    def refusal(self, address: str) -> str | None:
        """Why the crawl may not connect to `address`; None when it may."""
        if not self.block or address in self._trusted_addresses:
            return None
        kind = classify(address)
        if kind is None:
            return None
        return f"{address} is a {kind} address (fetch.block_private)"

    def trusts(self, host: str) -> bool:
        return host in self._trusted_hosts

    def trust(self, addresses: Iterable[str]) -> None:
        """A seed's host resolved to these: they may be connected to from now on. (Bounded by
        the seeds: only their hosts' answers are added.)"""
        self._trusted_addresses.update(addresses)

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """The connector's socket factory: refuses the address before the socket connects."""
        family, kind, proto, _, sockaddr = addr_info
        why = self.refusal(str(sockaddr[0]))
        if why is not None:
            raise AddressBlocked(why)
        return socket.socket(family=family, type=kind, proto=proto)


class GuardedResolver(AbstractResolver):
    """The connector's resolver, wrapped: a name's non-public addresses are dropped (see the
    module's docstring), and a seed's host has its addresses trusted."""

    def __init__(self, inner: AbstractResolver, guard: AddressGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        name = host.lower().rstrip(".")
        if self._guard.trusts(name):
            self._guard.trust(answer["host"] for answer in answers)
            return answers
        kept = [answer for answer in answers if self._guard.refusal(answer["host"]) is None]
        if not kept and answers:
            why = self._guard.refusal(answers[0]["host"])
            raise AddressBlocked(f"{name} resolves to {why}")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
