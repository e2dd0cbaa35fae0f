"""What a failed request means: aiohttp's and the system's errors as our error kinds.

Where aiohttp's errors cross into the crawl (as httpx maps httpcore's): each becomes a
`Failure`, data for the stored row, never an exception past the fetch stage. Whether the
process itself is at fault (out of sockets) is asked before (`out_of_sockets.py`).

- a timeout (connect, read or total): `timeout`, tried again;
- aiohttp.InvalidURL: `invalid_url`;
- aiohttp.ClientResponseError (a malformed response, not a status): `protocol`, tried again;
- an address fetch.block_private bars: `blocked`, and no attempt counted (nothing was sent),
  whether the connector refused it or, for a request through a proxy, the check before it;
- a name that does not resolve: `dns`, tried again only for the resolver's passing failure;
- any other connection or system error: `connection`, tried again.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import aiohttp

from scraper.crawl.addresses import AddressBlocked
from scraper.models import ErrorKind
from scraper.terminal import visible

WEB_TEXT_LIMIT = 200  # characters of a reason phrase or a server's error message kept


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a request has no response: its kind and message; `retry`: worth another attempt;
    `sent`: False when refused before a packet left (it counts as no attempt)."""

    kind: ErrorKind
    message: str
    retry: bool = False
    sent: bool = True


def failure_of(exc: TimeoutError | aiohttp.ClientError | OSError) -> Failure:
    """The failure an exception raised by a request (or by reading its response) stands for."""
    if isinstance(exc, TimeoutError):
        return Failure(ErrorKind.TIMEOUT, "timed out", retry=True)
    if isinstance(exc, aiohttp.InvalidURL):
        return Failure(ErrorKind.INVALID_URL, f"invalid URL: {web_text(str(exc))}")
    if isinstance(exc, aiohttp.ClientResponseError):  # malformed response, not an HTTP status
        return Failure(ErrorKind.PROTOCOL, f"bad response: {web_text(exc.message)}", retry=True)
    if isinstance(exc.__cause__, AddressBlocked):  # a proxied request's target (proxies.py)
        return Failure(ErrorKind.BLOCKED, f"refused: {exc.__cause__}", sent=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, AddressBlocked):
            return Failure(ErrorKind.BLOCKED, f"refused: {exc.os_error}", sent=False)
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            message = f"cannot resolve {exc.host}: {_reason(exc.os_error)}"
            # EAI_AGAIN is the resolver's failure, for now; a name that does not exist will
            # not exist a second later either.
            return Failure(ErrorKind.DNS, message, retry=exc.os_error.errno == socket.EAI_AGAIN)
    return Failure(ErrorKind.CONNECTION, describe(exc), retry=True)


def describe(exc: BaseException) -> str:
    """One line about a connection's failure, fit for a stored message."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = exc.os_error.strerror or str(exc.os_error)
        return f"cannot connect to {exc.host}:{exc.port}: {web_text(why)}"
    text = str(exc) or type(exc).__name__
    return web_text(text.splitlines()[0])


def web_text(text: str) -> str:
    """Text a server chose (a reason phrase, a header in an error), fit for a stored error
    message that may reach a terminal: control characters shown as escapes, and shortened."""
    text = visible(text)
    return text if len(text) <= WEB_TEXT_LIMIT else text[:WEB_TEXT_LIMIT] + "…"


def _reason(error: OSError) -> str:
    return web_text(error.strerror or str(error) or type(error).__name__)
