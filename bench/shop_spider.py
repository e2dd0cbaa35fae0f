"""Our spider for the shop case (`make bench`'s `ours-spider` row there): listings' embedded
JSON to products, and each product's name and price as an item (bench/scrapy_shop.py is the
same logic in Scrapy)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import scraper


class ShopSpider(scraper.Spider):
    name = "shop"

    def parse(self, page: scraper.Page) -> Iterator[Any]:
        script = page.css_first("script#data")
        data = json.loads(script.text() if script is not None else "{}")
        for pid in data.get("products", ()):
            yield page.follow(f"/page/{pid}", callback="product")
        if data.get("next"):
            yield page.follow(data["next"])

    def product(self, page: scraper.Page) -> Iterator[Any]:
        name, price = page.css_first("h1"), page.css_first("p.price")
        yield {
            "name": name.text() if name is not None else None,
            "price": price.text() if price is not None else None,
        }
