"""The pipeline: the byte budget between fetch and parse, and a parse worker dying mid-crawl."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal

import psutil
import pytest
from aiohttp import web

from helpers import BACKTRACKING, backtracking_site, base_url, crawl, rows, served
from scraper.crawl.crawler import Crawler
from scraper.crawl.pipeline import BodyBudget
from scraper.demosite import SiteSpec, make_app
from scraper.parse import procworker


def parse_workers() -> list[int]:
    """The pids of this process's live parse workers (psutil reads /proc: call it off the loop)."""
    pids = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and procworker.__name__ in child.cmdline():
                pids.append(child.pid)
    return pids


async def test_the_body_budget_holds_requests_back_until_bodies_are_parsed() -> None:
    budget = BodyBudget(limit=100, first_guess=40)
    first, second, third = [await budget.reserve() for _ in range(3)]  # 120: over the limit
    assert (first, second, third) == (40, 40, 40)
    fourth = asyncio.create_task(budget.reserve())
    await asyncio.sleep(0.01)
    assert not fourth.done()  # waits for room
    budget.settle(first, 0, measured=True)  # a response without a body: the mean drops
    assert budget.mean_body == 35 and budget.held == 80
    assert await asyncio.wait_for(fourth, 1) == 35
    budget.settle(second, 90, measured=True)  # a big body, held until parsed
    assert budget.held == 165
    budget.settle(third, 0, measured=False)  # a skipped URL: not in the mean
    assert budget.mean_body == 35 + (90 - 35) / 8
    budget.release(90)  # parsed
    assert budget.held == 35


async def test_bodiless_responses_do_not_hold_back_the_fetchers(aiohttp_server, make_config):
    """The parse backlog's byte budget reserves room per request from the mean body; responses
    without a body (not HTML, errors) count as empty, so all fetch.concurrency slots fill."""
    active = 0
    most = 0

    async def home(request: web.Request) -> web.Response:
        links = "".join(f'<a href="/file/{n}">{n}</a>' for n in range(150))
        return web.Response(text=f"<title>files</title>{links}", content_type="text/html")

    async def file(request: web.Request) -> web.Response:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.3)
        active -= 1
        return web.Response(body=b"x", content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/", home)
    app.router.add_get("/file/{n}", file)
    server = await aiohttp_server(app)
    config = make_config(
        [base_url(server)],
        fetch__concurrency=64,
        fetch__per_host_concurrency=64,
        fetch__autothrottle=False,
    )
    summary = await crawl(config)
    assert summary.pages == 151
    assert most >= 56, f"at most {most} requests at once, with fetch.concurrency = 64"


async def test_a_parse_worker_killed_mid_crawl_loses_no_page(aiohttp_server, make_config):
    """kill -9 of a parser process: a new process takes over (and parses the pages of the batches
    it held again, one by one), and the crawl finishes with every page stored once."""
    spec = SiteSpec(pages=150, page_bytes=20_000, latency=0.02, extras=False)
    app = make_app(spec)
    busy = served(app, 20)
    server = await aiohttp_server(app)
    config = make_config([base_url(server)], parse__workers=2)
    crawler = Crawler(config)
    run = asyncio.create_task(crawler.run())
    await busy.wait()
    victim = (await asyncio.to_thread(parse_workers))[0]
    os.kill(victim, signal.SIGKILL)
    summary = await run
    assert summary.status == "finished"
    expected = {base_url(server) + path.lstrip("/") for path in spec.reachable()}
    urls = [url for (url,) in await rows(config.storage.db, "SELECT url FROM pages")]
    assert len(urls) == len(set(urls))
    # the pages of the killed batch are stored with their error; links they held may be unseen
    failed = await rows(
        config.storage.db, "SELECT url, error FROM pages WHERE error_kind = 'parse'"
    )
    assert all("parse worker" in error for _, error in failed) and len(failed) <= 16
    # Every page is linked from about ten others, so none was reachable only through those.
    assert set(urls) == expected


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_page_over_parse_timeout_costs_a_worker_not_the_crawl(
    aiohttp_server, make_config, workers
):
    """An extraction regex that backtracks for years on one page: that page's worker is ended
    after parse.timeout, the page is stored with error_kind 'parse', and every other page (its
    batch-mates included) is parsed as usual."""
    server = await aiohttp_server(backtracking_site(pages=12))
    config = make_config(
        [base_url(server)], parse__workers=workers, parse__timeout=1.0, parse__regex_timeout=1e6,
        extract__heading={"css": "h1", "regex": BACKTRACKING}, storage__batch_size=5,
    )  # fmt: skip
    summary = await crawl(config)
    assert summary.status == "finished" and summary.pages == 14
    found = await rows(
        config.storage.db, "SELECT url, error_kind, error, fields FROM pages ORDER BY url"
    )
    failed = [(url, kind, error) for url, kind, error, _ in found if kind is not None]
    assert failed == [
        (
            base_url(server) + "evil",
            "parse",
            "parsing took over parse.timeout (1 s of CPU); its worker was ended",
        )
    ]
    assert all(fields == '{"heading": null}' for url, kind, _, fields in found if kind is None)


async def test_a_field_regex_over_its_time_costs_the_field_not_the_page(
    aiohttp_server, make_config
):
    """The backtracking rule gives up on /evil within parse.regex_timeout: that field is null and
    named in pages.field_errors, while the page, its other fields and its links stand."""
    server = await aiohttp_server(backtracking_site(pages=12))
    config = make_config(
        [base_url(server)], parse__timeout=60.0, parse__regex_timeout=0.05,
        extract__heading={"css": "h1", "regex": BACKTRACKING}, extract__title="title",
    )  # fmt: skip
    summary = await crawl(config)
    assert summary.status == "finished" and summary.pages == 14 and summary.errors == 0
    found = {
        url: (fields, field_errors)
        for url, fields, field_errors in await rows(
            config.storage.db, "SELECT url, fields, field_errors FROM pages"
        )
    }
    fields, field_errors = found[base_url(server) + "evil"]
    assert json.loads(fields) == {"heading": None, "title": "/evil"}
    assert json.loads(field_errors) == {
        "heading": "regex over its time (0.05 s) on a value of 61 characters"
    }
    assert all(errors is None for url, (_, errors) in found.items() if not url.endswith("evil"))
