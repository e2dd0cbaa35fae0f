"""`scraper parse URL --spider FILE.py:Class [--callback NAME] [--meta JSON]`: one page fetched
politely and given to a callback; what it yields printed as JSON, as `scrapy parse` does.

Exit codes: 0 the callback ran, 1 it raised (the traceback on stderr) or the page could not be
fetched or parsed, 2 bad input (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from scraper.cli.crawl import load_with_spider
from scraper.errors import ConfigError
from scraper.models import CrawlRequest
from scraper.urls import canonicalize

if TYPE_CHECKING:
    from scraper.cli.common import Commands
    from scraper.crawl.one_page import OnePage

EXIT_FAILED = 1


def add_parsers(commands: Commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "parse",
        parents=[common],
        help="fetch one page and print what a spider's callback yields, as JSON",
        description="Fetch URL as a crawl would (within its scope, robots.txt obeyed) and "
        "call the spider's callback on it; print the items and requests it yields as JSON. "
        "Nothing is stored.",
    )
    parser.add_argument("url", metavar="URL")
    parser.add_argument("--spider", metavar="FILE.py:CLASS", help="the spider (crawl.spider)")
    parser.add_argument(
        "--callback", default="parse", metavar="NAME", help="the method to call (default: parse)"
    )
    parser.add_argument(
        "--meta", default=None, metavar="JSON", help="page.meta, as a JSON object (default: {})"
    )
    parser.set_defaults(command=_parse_command)


def _parse_command(args: argparse.Namespace) -> int:
    from scraper.crawl.one_page import parse_one

    url = canonicalize(args.url)
    if url is None:
        raise ConfigError(f"parse {args.url!r}: not an http(s) URL")
    meta = _meta(args.meta)
    config, spider = load_with_spider(args, {"crawl.seeds": [url]})
    if spider is None:
        raise ConfigError("parse: which spider? give --spider FILE.py:Class (or crawl.spider)")
    request = CrawlRequest(
        url=url,
        callback=None if args.callback == "parse" else args.callback,
        meta=json.dumps(meta) if meta else None,
    )
    page = asyncio.run(parse_one(config, spider, request))
    print(json.dumps(_report(page, args.callback), ensure_ascii=False, indent=2))
    if page.parsed is not None and page.parsed.callback_trace:
        print(page.parsed.callback_trace, file=sys.stderr, end="")
    failed = page.parsed is None or page.parsed.callback_error is not None
    return EXIT_FAILED if failed else 0


def _meta(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--meta: not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ConfigError('--meta: a JSON object, e.g. \'{"listing": "https://..."}\'')
    return meta


def _report(page: OnePage, callback: str) -> dict[str, Any]:
    fetch, parsed = page.fetch, page.parsed
    report: dict[str, Any] = {
        "url": fetch.final_url or fetch.request.url,
        "status": fetch.status,
        "callback": callback,
        "items": [json.loads(item) for item in parsed.items] if parsed else [],
        # Those with a callback, meta or data first, then the plain GETs for `parse`.
        "requests": [
            *(_request(r) for r in parsed.requests),
            *(_request(CrawlRequest(url)) for url in parsed.follow),
        ]
        if parsed
        else [],
        "error": page.why or (parsed.callback_error if parsed else None),
    }
    return report


def _request(request: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "url": request.url,
        "callback": request.callback or "parse",
        "meta": json.loads(request.meta) if request.meta else {},
        "method": request.verb,
    }
    if request.headers:
        shown["headers"] = json.loads(request.headers)
    if request.body is not None:
        shown["body"] = request.body.decode("utf-8", "replace")
    return shown
