"""The shop case's spider in Scrapy 2.x, with the same logic as bench/shop_spider.py (parsel
selectors): listings' embedded JSON to products, each product's name and price; every page a row
(`scrapy_crawl.SqlitePipeline`, batches of 200), as our crawler stores every page.

    python -m bench.scrapy_shop SEED --db out.db [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.http import Response
from w3lib.url import canonicalize_url
from yarl import URL


class ShopSpider(scrapy.Spider):
    name = "shop"

    def __init__(self, seed: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [seed]
        self.allowed_domains = [URL(seed).host or ""]

    def parse(self, response: Response) -> Iterator[Any]:
        yield _row(response, None, None)
        data = json.loads(response.css("script#data::text").get() or "{}")
        for pid in data.get("products", ()):
            yield response.follow(f"/page/{pid}", callback=self.product)
        if data.get("next"):
            yield response.follow(data["next"], callback=self.parse)

    def product(self, response: Response) -> Iterator[Any]:
        yield _row(response, response.css("h1::text").get(), response.css("p.price::text").get())


def _row(response: Response, name: str | None, price: str | None) -> dict[str, Any]:
    return {
        "url": canonicalize_url(response.url),
        "status": response.status,
        "fetched_at": time.time(),
        "title": name,
        "description": None,
        "price": price,
        "links": [],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The shop case as a Scrapy spider.")
    parser.add_argument("seed")
    parser.add_argument("--db", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    process = CrawlerProcess(
        settings={
            "BENCH_DB": args.db,
            "ITEM_PIPELINES": {"bench.scrapy_crawl.SqlitePipeline": 300},
            "CONCURRENT_REQUESTS": args.concurrency,
            "CONCURRENT_REQUESTS_PER_DOMAIN": args.concurrency,
            "ROBOTSTXT_OBEY": False,
            "AUTOTHROTTLE_ENABLED": False,
            "DOWNLOAD_DELAY": 0,
            "TELNETCONSOLE_ENABLED": False,
            "LOG_LEVEL": "WARNING",
        }
    )
    process.crawl(ShopSpider, seed=args.seed)
    process.start()


if __name__ == "__main__":
    main()
