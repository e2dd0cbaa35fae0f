"""A shop whose products are listed only in each listing page's embedded JSON (no link to
them), paginated by a "next" token, with a JSON search API that answers POSTs; and the spiders
the tests crawl it with, as source text (each test writes the one it needs to a file)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

LISTINGS = 4  # listing pages, each with PER_LISTING products
PER_LISTING = 5


def product_ids(listing: int, per_listing: int = PER_LISTING) -> list[int]:
    return [listing * 100 + n for n in range(per_listing)]


def all_products(listings: int = LISTINGS, per_listing: int = PER_LISTING) -> list[int]:
    return [pid for listing in range(listings) for pid in product_ids(listing, per_listing)]


def make_shop(
    *,
    hits: dict[str, int] | None = None,
    listings: int = LISTINGS,
    per_listing: int = PER_LISTING,
    latency: float = 0.0,
) -> web.Application:
    """The shop of `listings` pages of `per_listing` products (under 100), each page served
    after `latency` seconds; `hits` counts the requests per path (and method, for the API)."""
    counts = hits if hits is not None else {}

    async def listing(request: web.Request) -> web.Response:
        counts[request.path_qs] = counts.get(request.path_qs, 0) + 1
        await asyncio.sleep(latency)
        number = int(request.query.get("page", "0"))
        data: dict[str, object] = {"products": product_ids(number, per_listing)}
        if number + 1 < listings:
            data["next"] = f"/?page={number + 1}"
        html = (
            "<html><head><title>Shop</title></head><body><h1>Listing</h1>"
            f'<script id="data" type="application/json">{json.dumps(data)}</script>'
            '<a href="/about">about us</a></body></html>'
        )
        return web.Response(text=html, content_type="text/html")

    async def product(request: web.Request) -> web.Response:
        counts[request.path] = counts.get(request.path, 0) + 1
        await asyncio.sleep(latency)
        pid = int(request.match_info["pid"])
        html = (
            f"<html><head><title>Product {pid}</title></head><body>"
            f'<h1>Product <b>{pid}</b></h1><span class="price">{pid % 7 + 0.5}</span>'
            '<a href="/about">about us</a></body></html>'
        )
        return web.Response(text=html, content_type="text/html")

    async def about(request: web.Request) -> web.Response:
        counts["/about"] = counts.get("/about", 0) + 1
        return web.Response(text="<title>About</title>", content_type="text/html")

    async def search(request: web.Request) -> web.Response:
        query = await request.json()
        counts[f"POST {request.path}"] = counts.get(f"POST {request.path}", 0) + 1
        wanted = int(query["below"])
        found = [pid for pid in all_products() if pid % 7 + 0.5 < wanted]
        return web.json_response({"token": request.headers.get("X-Token"), "found": found})

    async def robots(request: web.Request) -> web.Response:
        return web.Response(text="User-agent: *\nDisallow:\n")

    app = web.Application()
    app.router.add_get("/", listing)
    app.router.add_get("/product/{pid}", product)
    app.router.add_get("/about", about)
    app.router.add_post("/api/search", search)
    app.router.add_get("/robots.txt", robots)
    return app


SHOP_SPIDER = """
import json
import scraper


class Shop(scraper.Spider):
    name = "shop"

    def parse(self, page):
        data = json.loads(page.css_first("script#data").text())
        for pid in data["products"]:
            yield page.follow(f"/product/{pid}", callback="product", meta={"listing": page.url})
        if data.get("next"):
            yield page.follow(data["next"])

    def product(self, page):
        yield {
            "name": page.css_first("h1").text(),
            "price": float(page.css_first(".price").text()),
            "listing": page.meta["listing"],
            "depth": page.depth,
        }
"""
