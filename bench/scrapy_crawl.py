"""The same crawl as a plain Scrapy 2.x project would do it (needs the `bench` extra).

    python -m bench.scrapy_crawl SEED --db out.db [--concurrency 64]

One spider that extracts what our crawler is configured to (title, meta description, `p.price`,
links) and follows in-site links with `response.follow`; Scrapy's own dupe filter de-duplicates
them (its fingerprint canonicalises URLs as we do). An item pipeline writes to SQLite in batches
of 200, the usual way. Settings are Scrapy's defaults except what a fair comparison needs: the
concurrency, no robots.txt (the site has none), no throttling, no telnet console.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.http import Response
from w3lib.url import canonicalize_url
from yarl import URL

from .bare import BATCH, SCHEMA


class BenchSpider(scrapy.Spider):
    name = "bench"

    def __init__(self, seed: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [seed]
        self.allowed_domains = [URL(seed).host or ""]

    def parse(self, response: Response) -> Iterator[Any]:
        links: dict[str, None] = {}
        for href in response.css("a::attr(href)").getall():
            url = response.urljoin(href)
            if url.startswith(("http://", "https://")):
                links[canonicalize_url(url)] = None
        yield {
            "url": canonicalize_url(response.url),
            "status": response.status,
            "fetched_at": time.time(),
            "title": response.css("title::text").get(),
            "description": response.css('meta[name="description"]::attr(content)').get(),
            "price": response.css("p.price::text").get(),
            "links": list(links),
        }
        for url in links:
            yield response.follow(url, callback=self.parse)  # off-site ones are dropped by Scrapy


class SqlitePipeline:
    """Batches of BATCH rows per transaction, like our sink and the bare loop."""

    def __init__(self, db: str) -> None:
        self.path = db
        self.rows: list[tuple[Any, ...]] = []
        self.db: sqlite3.Connection | None = None

    @classmethod
    def from_crawler(cls, crawler: Any) -> SqlitePipeline:
        return cls(crawler.settings.get("BENCH_DB"))

    def open_spider(self, spider: scrapy.Spider | None = None) -> None:
        self.db = sqlite3.connect(self.path)
        self.db.execute(SCHEMA)

    def process_item(self, item: dict[str, Any], spider: Any = None) -> dict[str, Any]:
        links = json.dumps(item["links"])
        fields = (item["title"], item["description"], item["price"], links, None)
        self.rows.append((item["url"], item["status"], item["fetched_at"], *fields))
        if len(self.rows) >= BATCH:
            self.flush()
        return item

    def close_spider(self, spider: scrapy.Spider | None = None) -> None:
        self.flush()
        assert self.db is not None
        self.db.close()

    def flush(self) -> None:
        assert self.db is not None
        self.db.executemany("INSERT INTO pages VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self.rows)
        self.db.commit()
        self.rows.clear()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The benchmark crawl as a Scrapy spider.")
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
    process.crawl(BenchSpider, seed=args.seed)
    process.start()


if __name__ == "__main__":
    main()
