"""aiohttp's errors as ours: each raised for real by a request to 127.0.0.1, then mapped."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from scraper.crawl.dns import StaticResolver
from scraper.crawl.failures import WEB_TEXT_LIMIT, Failure, describe, failure_of, web_text
from scraper.models import ErrorKind


async def raised(url: str, **session: object) -> TimeoutError | aiohttp.ClientError | OSError:
    """What a GET of `url` raises."""
    async with aiohttp.ClientSession(**session) as client:  # type: ignore[arg-type]
        try:
            async with client.get(url) as response:
                await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return exc
    raise AssertionError(f"{url} raised nothing")


@pytest.fixture
async def raw_server() -> AsyncIterator[tuple[int, asyncio.Queue[bytes]]]:
    """A server that answers each request with the next reply put in its queue (none yet: it
    waits, silent)."""
    replies: asyncio.Queue[bytes] = asyncio.Queue(maxsize=8)
    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(await replies.get())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], replies
        for writer in writers:  # (a silent answer is still waiting)
            writer.close()
            replies.put_nowait(b"")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_is_a_connection_error_worth_a_retry() -> None:
    port = free_port()
    failure = failure_of(await raised(f"http://127.0.0.1:{port}/"))
    assert (failure.kind, failure.retry, failure.sent) == (ErrorKind.CONNECTION, True, True)
    assert failure.message.startswith(f"cannot connect to 127.0.0.1:{port}: ")


async def test_a_malformed_response_is_a_protocol_error_worth_a_retry(raw_server) -> None:
    port, replies = raw_server
    replies.put_nowait(b"HTTP/1.1 abc\r\n\r\n")
    failure = failure_of(await raised(f"http://127.0.0.1:{port}/"))
    assert (failure.kind, failure.retry) == (ErrorKind.PROTOCOL, True)
    assert failure.message.startswith("bad response: Bad status line")
    assert "\n" not in failure.message  # the server's text, escaped


async def test_a_server_that_does_not_answer_in_time_is_a_timeout(raw_server) -> None:
    port, _ = raw_server
    timeout = aiohttp.ClientTimeout(total=0.2)
    failure = failure_of(await raised(f"http://127.0.0.1:{port}/", timeout=timeout))
    assert failure == Failure(ErrorKind.TIMEOUT, "timed out", retry=True)


async def test_an_invalid_url_is_not_retried() -> None:
    failure = failure_of(await raised("http:///nohost"))
    assert (failure.kind, failure.retry) == (ErrorKind.INVALID_URL, False)
    assert failure.message == "invalid URL: http:///nohost"


async def test_a_name_that_does_not_exist_is_a_dns_error_not_retried() -> None:
    connector = aiohttp.TCPConnector(resolver=StaticResolver({}, None), use_dns_cache=False)
    failure = failure_of(await raised("http://nowhere.test/", connector=connector))
    assert (failure.kind, failure.retry) == (ErrorKind.DNS, False)
    assert failure.message == "cannot resolve nowhere.test: nowhere.test: Name or service not known"


class Unavailable(AbstractResolver):
    """A name server that fails for now (EAI_AGAIN), as one under load does."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    async def close(self) -> None:
        pass


async def test_a_name_servers_passing_failure_is_retried() -> None:
    connector = aiohttp.TCPConnector(resolver=Unavailable(), use_dns_cache=False)
    failure = failure_of(await raised("http://busy.test/", connector=connector))
    assert (failure.kind, failure.retry) == (ErrorKind.DNS, True)


def test_any_other_system_error_is_a_connection_error() -> None:
    failure = failure_of(ConnectionResetError(104, "Connection reset by peer"))
    assert failure == Failure(ErrorKind.CONNECTION, "[Errno 104] Connection reset by peer", True)
    assert describe(aiohttp.ServerDisconnectedError()) == "Server disconnected"


def test_text_from_the_web_is_escaped_and_shortened() -> None:
    assert web_text("Not\x1b[2J Found") == "Not\\x1b[2J Found"
    long = web_text("x" * 1000)
    assert len(long) == WEB_TEXT_LIMIT + 1 and long.endswith("…")
