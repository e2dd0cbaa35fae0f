"""Reading a response: each a real one from an aiohttp server on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from scraper.crawl.response import read_response
from scraper.crawl.retries import Retryable
from scraper.models import CrawlRequest, ErrorKind, FetchResult

PAGE = b"<html><title>t</title></html>"
Read = Callable[..., Awaitable[FetchResult]]


async def chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(10):
        await response.write(b"x" * 1000)
    return response


async def gzipped(request: web.Request) -> web.Response:
    response = web.Response(body=b"z" * 5000, content_type="text/html")
    response.enable_compression()  # ~50 bytes on the wire
    return response


def headed(status: int, **headers: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers=headers)

    return handler


async def page(request: web.Request) -> web.Response:
    headers = {"ETag": '"v1"', "Last-Modified": "then"}
    return web.Response(body=PAGE, content_type="text/html", headers=headers)


async def pdf(request: web.Request) -> web.Response:
    return web.Response(body=b"%PDF" * 100, content_type="application/pdf")


ROUTES = {
    "/page": page,
    "/pdf": pdf,
    "/chunked": chunked,
    "/gzipped": gzipped,
    "/gone": headed(404),
    "/busy": headed(503, **{"Retry-After": "7"}),
    "/slow-down": headed(429),
    "/moved": headed(301, Location="/page?b=2&a=1#part"),
    "/same": headed(304),
}


@pytest.fixture
async def read(aiohttp_server) -> AsyncIterator[Read]:
    app = web.Application()
    for path, handler in ROUTES.items():
        app.router.add_get(path, handler)
    server = await aiohttp_server(app)
    # As the crawl's session (session.py): bodies come as sent, read_response decodes them.
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def read_path(path: str, **options: object) -> FetchResult:
            request = CrawlRequest(str(server.make_url(path)))
            async with session.get(request.url, allow_redirects=False) as response:
                return await read_response(
                    response,
                    request,
                    attempt=2,
                    fetched_at="now",
                    started=time.perf_counter(),
                    **{"max_bytes": 100_000, **options},  # type: ignore[arg-type]
                )

        yield read_path


async def test_a_page_is_read_whole_with_its_validators(read: Read) -> None:
    page = await read("/page")
    assert (page.status, page.body, page.bytes, page.attempts) == (200, PAGE, len(PAGE), 2)
    assert (page.etag, page.last_modified, page.error_kind) == ('"v1"', "then", None)
    assert page.content_type == "text/html"
    assert page.elapsed_ms is not None and page.elapsed_ms >= 0


async def test_other_types_are_recorded_not_downloaded_unless_any_type(read: Read) -> None:
    recorded = await read("/pdf")
    assert (recorded.status, recorded.body, recorded.bytes) == (200, None, 400)
    whole = await read("/pdf", any_type=True)
    assert whole.body == b"%PDF" * 100


async def test_a_404_is_the_answer(read: Read) -> None:
    gone = await read("/gone")
    assert (gone.status, gone.error_kind, gone.error) == (404, ErrorKind.HTTP, "HTTP 404 Not Found")


async def test_429_and_5xx_are_retryable_with_their_retry_after(read: Read) -> None:
    with pytest.raises(Retryable) as busy:
        await read("/busy")
    assert (busy.value.retry_after, busy.value.result.status) == (7.0, 503)
    assert busy.value.result.error == "HTTP 503 Service Unavailable"
    with pytest.raises(Retryable) as slow:
        await read("/slow-down")
    assert (slow.value.retry_after, slow.value.result.error_kind) == (None, ErrorKind.HTTP)


async def test_a_redirect_keeps_its_canonical_target_and_a_304_its_own_url(read: Read) -> None:
    moved = await read("/moved")
    assert moved.status == 301 and moved.final_url is not None
    assert moved.final_url == str(moved.request.url).replace("/moved", "/page?b=2&a=1")  # canonical
    same = await read("/same")
    assert same.status == 304 and same.final_url is not None and same.final_url.endswith("/same")


async def test_a_body_over_the_limit_is_abandoned_declared_streamed_or_compressed(
    read: Read,
) -> None:
    declared = await read("/page", max_bytes=10)
    assert (declared.error_kind, declared.bytes, declared.body) == (
        ErrorKind.TOO_LARGE,
        len(PAGE),
        None,
    )
    streamed = await read("/chunked", max_bytes=2500)
    assert (streamed.error_kind, streamed.body) == (ErrorKind.TOO_LARGE, None)
    assert streamed.bytes is not None and streamed.bytes > 2500
    inflated = await read("/gzipped", max_bytes=2500)  # counted once decompressed
    assert inflated.error_kind == ErrorKind.TOO_LARGE
    assert streamed.error == "body larger than fetch.max_bytes (2500 bytes); abandoned"


async def test_a_body_limit_keeps_the_first_bytes(read: Read) -> None:
    first = await read("/chunked", body_limit=2500, any_type=True)
    assert (first.error_kind, first.bytes, first.body) == (None, 2500, b"x" * 2500)
    small = await read("/page", body_limit=10)  # declared, and over: read up to the limit
    assert (small.error_kind, small.body) == (None, PAGE[:10])


async def test_within_the_limit_every_way_of_sending_reads_whole(read: Read) -> None:
    assert (await read("/chunked")).body == b"x" * 10_000
    assert (await read("/gzipped")).body == b"z" * 5000
