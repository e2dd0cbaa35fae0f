"""One page through the crawl's stages, outside a crawl: `scraper parse URL --spider ...`.

The page is fetched as a crawl would fetch it (the crawl's boundary and address guard, robots.txt
obeyed, `fetch.per_host_delay` or the host's Crawl-delay kept between robots.txt and the page,
redirects followed within the boundary) and parsed in a parse worker with the spider's callback,
as `scrapy parse` does; nothing is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from scraper.config import Config
from scraper.crawl.fetch import Fetcher
from scraper.crawl.response import SPIDER_TYPES
from scraper.crawl.robots import RobotsGate
from scraper.models import (
    CrawlRequest,
    FetchResult,
    ParseFailure,
    ParseJob,
    ParseResult,
    SpiderCall,
    SpiderRef,
)
from scraper.parse.page import parse_pages
from scraper.parse.pool import ParsePool
from scraper.parse.procpool import WorkerDied
from scraper.urls import host_of


@dataclass(frozen=True, slots=True)
class OnePage:
    """The page's fetch, and what the callback made of it (None: it was not called, `why`)."""

    fetch: FetchResult
    parsed: ParseResult | None = None
    why: str | None = None


async def parse_one(config: Config, spider: SpiderRef, request: CrawlRequest) -> OnePage:
    """Fetch `request` politely and run its callback (`request.callback`, else "parse")."""
    scope = config.crawl.scope()
    fetcher = Fetcher(
        config.fetch,
        outside=scope.outside,
        trusted_hosts=[host_of(request.url)],
        types=SPIDER_TYPES,
    )
    async with fetcher:
        gate = RobotsGate(
            fetcher,
            config.fetch.user_agent,
            timeout=config.fetch.robots_timeout,
            obey=config.crawl.obey_robots,
            max_crawl_delay=config.fetch.max_crawl_delay,
            rounds=1,
        )
        rules = await gate.rules(host_of(request.url), request.url)
        skip = rules.skip_reason(request.url)
        if skip is not None:
            return OnePage(fetch=_unfetched(request), why=skip)
        if config.crawl.obey_robots:  # robots.txt was a request to the host: wait our turn
            await asyncio.sleep(max(config.fetch.per_host_delay, rules.delay or 0.0))
        result = await fetcher.fetch(request, any_type=True)
    if result.error_kind is not None or result.body is None:
        return OnePage(fetch=result, why=result.error or f"HTTP {result.status}: no body")
    parse = dataclasses.replace(config.parse, workers=max(1, config.parse.workers))
    job = ParseJob(
        url=result.final_url or request.url,
        body=result.body,
        content_type=result.content_type,
        rules=config.extract,
        text="off",
        policy=config.crawl.url_policy(),
        scope=scope,
        regex_timeout=config.parse.regex_timeout,
        spider=SpiderCall(
            spider=spider,
            callback=request.callback or "parse",
            meta=request.meta,
            status=result.status or 0,
            headers=result.headers,
            depth=request.depth,
            identity=request.identity,
        ),
    )
    async with ParsePool(parse) as parser:
        try:
            (outcome,) = await parser.run(parse_pages, [job])
        except WorkerDied as exc:
            outcome = ParseFailure(f"parsing {exc}")
    if isinstance(outcome, ParseFailure):
        return OnePage(fetch=result, why=outcome.error)
    return OnePage(fetch=result, parsed=outcome)


def _unfetched(request: CrawlRequest) -> FetchResult:
    from scraper.store.base import utc_now

    return FetchResult(request=request, fetched_at=utc_now(), attempts=0)
