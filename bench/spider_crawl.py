"""Our crawler with a spider doing what the `ours` row's `[extract]` rule and link following do
(and what `scrapy_crawl.py`'s spider does): `make bench`'s `ours-spider` row.

    scraper crawl SEED --spider bench/spider_crawl.py:BenchSpider ...

Each page yields one item (its `p.price`, as `extract.price = "p.price"` stores it) and a
request for each of its links; the crawl's scope keeps the in-site ones, as it does for links.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import scraper


class BenchSpider(scraper.Spider):
    name = "bench"

    def parse(self, page: scraper.Page) -> Iterator[Any]:
        price = page.css_first("p.price")
        yield {"price": price.text() if price is not None else None}
        for link in page.css("a[href]"):
            yield page.follow(link)
