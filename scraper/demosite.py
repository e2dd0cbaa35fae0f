"""A deterministic demo site: `make demo`, the tests and the benchmarks crawl it on 127.0.0.1.

Page i of N links to ~`links_per_page` others, chosen by a generator seeded with i, in every form a
crawler meets (relative, `../`, absolute, fragments, percent-encoded, off-site, mailto:, ...). The
link graph is known in advance (`SiteSpec.reachable()`), so a test can compare a crawl with the
exact set of pages it should have found. Knobs add latency, failing, flaky, slow and oversized
pages, redirects and non-HTML resources.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache

from aiohttp import web

WORDS = [
    "crawl",
    "fetch",
    "parse",
    "store",
    "queue",
    "worker",
    "event",
    "loop",
    "socket",
    "page",
    "link",
    "anchor",
    "title",
    "header",
    "body",
    "python",
    "async",
    "await",
    "future",
    "task",
    "pool",
    "process",
    "thread",
    "batch",
    "commit",
    "index",
    "query",
    "table",
    "column",
    "latency",
    "throughput",
    "politeness",
    "robots",
    "sitemap",
    "frontier",
    "canonical",
    "redirect",
    "retry",
    "backoff",
]


@dataclass(frozen=True)
class SiteSpec:
    pages: int = 200
    links_per_page: int = 45
    page_bytes: int = 40_000  # roughly; filler paragraphs are added up to this size
    seed: int = 7
    latency: float = 0.0  # seconds added to every response
    error_rate: float = 0.0  # this fraction of /page/N answer 500 every time (chosen by N)
    extras: bool = True  # the special resources below, linked from the home page
    flaky_failures: int = 2  # /flaky/K answers 503 this many times, then 200
    huge_bytes: int = 12 * 1024 * 1024
    slow_seconds: float = 0.5  # /slow/K trickles its body over this long
    special_count: int = 3  # how many of each special resource

    def page_links(self, i: int) -> list[tuple[str, str]]:
        """(href as written in page i, canonical path it leads to) for each link of page i."""
        rng = random.Random(self.seed * 1_000_003 + i)
        links = []
        for n in range(self.links_per_page):
            j = rng.randrange(self.pages)
            form = n % 8
            target = f"/page/{j}"
            href = {
                0: target,
                1: f"{j}",  # relative to /page/
                2: f"../page/{j}",
                3: f"/page/{j}#section-{n}",
                4: "/page/" + "".join(f"%{ord(c):02X}" for c in str(j)),  # percent-encoded
                5: f"./{j}?",  # empty query string
                6: target,
                7: f"/page/{j}#top",
            }[form]
            links.append((href, target))
        if i % 10 == 0:
            k = (i // 10) % max(1, self.pages // 50 + 1)
            links.append((f"/list?page={k}", f"/list?page={k}"))
        return links

    def fails(self, i: int) -> bool:
        return random.Random(self.seed * 7_919 + i).random() < self.error_rate

    def list_links(self, k: int) -> list[tuple[str, str]]:
        start = k * 50
        return [(f"/page/{j}", f"/page/{j}") for j in range(start, min(start + 50, self.pages))]

    def home_links(self) -> list[tuple[str, str]]:
        links = [(f"/page/{j}", f"/page/{j}") for j in range(min(10, self.pages))]
        if self.extras:
            for k in range(self.special_count):
                links += [
                    (f"/files/report-{k}", f"/files/report-{k}"),  # a PDF with no extension
                    (f"/redirect/{k}", f"/redirect/{k}"),
                    (f"/missing/{k}", f"/missing/{k}"),
                    (f"/flaky/{k}", f"/flaky/{k}"),
                    (f"/slow/{k}", f"/slow/{k}"),
                    (f"/huge/{k}", f"/huge/{k}"),
                ]
        return links

    def reachable(self) -> set[str]:
        """Every path a crawl from / can reach on this host: what a full crawl must store."""
        seen = {"/"}
        todo = deque(["/"])
        while todo:
            path = todo.popleft()
            for _, target in self.links_from(path):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    def links_from(self, path: str) -> list[tuple[str, str]]:
        if path == "/":
            return self.home_links()
        if path.startswith("/page/"):
            i = int(path.removeprefix("/page/"))
            return [] if self.fails(i) else self.page_links(i)
        if path.startswith("/list?page="):
            return self.list_links(int(path.removeprefix("/list?page=")))
        tail = path.rsplit("/", 1)[1]
        k = int(tail) if tail.isdigit() else -1
        if path.startswith("/redirect/"):
            return self.links_from(f"/page/{k}")  # the crawler parses where the redirect ends
        if path.startswith("/flaky/"):
            return [(f"/page/{k}", f"/page/{k}")]
        return []

    def title(self, path: str) -> str:
        if path.startswith("/page/"):
            return f"Page {path.removeprefix('/page/')} — Demo Site"
        if path.startswith("/list?page="):
            return f"List {path.removeprefix('/list?page=')} — Demo Site"
        return "Demo Site"

    def price(self, i: int) -> str:
        return f"{(i * 37) % 1000 / 10 + 1:.2f}"


@dataclass
class _State:
    spec: SiteSpec
    hits: dict[str, int] = field(default_factory=dict)


STATE = web.AppKey("state", _State)


def make_app(spec: SiteSpec | None = None) -> web.Application:
    """The aiohttp application for `spec`; `app[STATE].hits` counts requests per path."""
    spec = spec or SiteSpec()
    app = web.Application(middlewares=[_count_and_delay])
    app[STATE] = _State(spec)
    app.router.add_get("/", _home)
    app.router.add_get("/page/{n}", _page)
    app.router.add_get("/list", _list)
    app.router.add_get("/files/{name}", _file)
    app.router.add_get("/redirect/{k}", _redirect)
    app.router.add_get("/missing/{k}", _missing)
    app.router.add_get("/flaky/{k}", _flaky)
    app.router.add_get("/slow/{k}", _slow)
    app.router.add_get("/huge/{k}", _huge)
    return app


@web.middleware
async def _count_and_delay(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = request.app[STATE]
    key = request.path_qs
    state.hits[key] = state.hits.get(key, 0) + 1
    if state.spec.latency:
        await asyncio.sleep(state.spec.latency)
    return await handler(request)


def _spec(request: web.Request) -> SiteSpec:
    return request.app[STATE].spec


def _html(body: str) -> web.Response:
    return web.Response(body=body.encode(), content_type="text/html", charset="utf-8")


async def _home(request: web.Request) -> web.Response:
    spec = _spec(request)
    return _html(_render(spec, "/", spec.title("/"), tuple(h for h, _ in spec.home_links())))


async def _page(request: web.Request) -> web.Response:
    spec = _spec(request)
    try:
        i = int(request.match_info["n"])
    except ValueError:
        raise web.HTTPNotFound() from None
    if not 0 <= i < spec.pages:
        raise web.HTTPNotFound()
    if spec.fails(i):
        raise web.HTTPInternalServerError()
    return _html(_page_html(spec, i))


async def _list(request: web.Request) -> web.Response:
    spec = _spec(request)
    k = int(request.query.get("page", "0"))
    path = f"/list?page={k}"
    return _html(_render(spec, path, spec.title(path), tuple(h for h, _ in spec.list_links(k))))


async def _file(request: web.Request) -> web.Response:
    return web.Response(body=b"%PDF-1.4 demo\n" * 100, content_type="application/pdf")


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently(f"/page/{request.match_info['k']}")


async def _missing(request: web.Request) -> web.Response:
    raise web.HTTPNotFound()


async def _flaky(request: web.Request) -> web.Response:
    spec = _spec(request)
    if request.app[STATE].hits[request.path_qs] <= spec.flaky_failures:
        raise web.HTTPServiceUnavailable(headers={"Retry-After": "0"})
    k = int(request.match_info["k"])
    return _html(_render(spec, request.path, "Flaky page", (f"/page/{k}",)))


async def _slow(request: web.Request) -> web.StreamResponse:
    spec = _spec(request)
    response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
    await response.prepare(request)
    await response.write(b"<html><head><title>Slow page</title></head><body>")
    for _ in range(5):
        await asyncio.sleep(spec.slow_seconds / 5)
        await response.write(b"<p>" + b"slow " * 200 + b"</p>")
    await response.write(b"</body></html>")
    return response


async def _huge(request: web.Request) -> web.StreamResponse:
    """A body larger than the crawler's usual fetch.max_bytes, sent without Content-Length."""
    spec = _spec(request)
    response = web.StreamResponse(headers={"Content-Type": "text/html"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunk = b"<p>" + b"x" * 65_000 + b"</p>"
    sent = 0
    try:
        while sent < spec.huge_bytes:
            await response.write(chunk)
            sent += len(chunk)
    except ConnectionResetError:  # the crawler gave up reading, as it should
        return response
    return response


def render(spec: SiteSpec, path: str) -> str | None:
    """The HTML the site serves at "/", "/page/N" or "/list?page=K" (None for any other path or a
    failing page): what the benchmark writes to disk, so its site has the same link graph."""
    if path == "/":
        return _render(spec, "/", spec.title("/"), tuple(h for h, _ in spec.home_links()))
    if path.startswith("/page/"):
        i = int(path.removeprefix("/page/"))
        return _page_html(spec, i) if 0 <= i < spec.pages and not spec.fails(i) else None
    if path.startswith("/list?page="):
        k = int(path.removeprefix("/list?page="))
        return _render(spec, path, spec.title(path), tuple(h for h, _ in spec.list_links(k)))
    return None


@lru_cache(maxsize=4096)
def _page_html(spec: SiteSpec, i: int) -> str:
    hrefs = tuple(href for href, _ in spec.page_links(i))
    return _render(spec, f"/page/{i}", spec.title(f"/page/{i}"), hrefs, i)


def _render(spec: SiteSpec, path: str, title: str, hrefs: tuple[str, ...], i: int = -1) -> str:
    rng = random.Random(spec.seed + len(path) + i)
    anchors = "\n".join(f'<li><a href="{h}">link {n}</a></li>' for n, h in enumerate(hrefs))
    offsite = (
        '<a href="http://offsite.invalid/away">away</a> <a href="mailto:demo@example.invalid">mail'
        '</a> <a href="javascript:void(0)">js</a> <a href="tel:+100">tel</a>'
    )
    head = (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="description" content="About {title}">'
        f'<link rel="canonical" href="{path}">'
        "<style>body { font-family: sans-serif }</style>"
        "<script>var tracking = 'not visible text';</script></head><body>"
        f'<h1>{title}</h1><p class="price">{spec.price(max(i, 0))}</p>'
        f"<nav><ul>{anchors}</ul></nav><footer>{offsite}</footer>"
    )
    parts = [head]
    size = len(head)
    while size < spec.page_bytes:
        para = "<p>" + " ".join(rng.choice(WORDS) for _ in range(120)) + "</p>\n"
        parts.append(para)
        size += len(para)
    parts.append("</body></html>")
    return "".join(parts)


async def serve(spec: SiteSpec, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Start the site; returns the runner (its `.addresses` tell the port). Call `.cleanup()`."""
    # A crawler abandoning an oversized body resets the connection, as it should: not news.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    runner = web.AppRunner(make_app(spec), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
