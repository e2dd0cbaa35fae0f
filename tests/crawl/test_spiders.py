"""Spiders: the user's callbacks in the parse workers, their requests as frontier rows, their
items as rows. Real crawls (`scraper crawl --spider` in a subprocess) of a real shop site."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from shopsite import LISTINGS, SHOP_SPIDER, all_products, make_shop

from helpers import SCRAPER, base_url, rows, scraper_cli

FAST = ["--set", "fetch.retry_backoff=0.01", "--set", "crawl.sitemaps=false",
        "--set", "parse.workers=1", "-q"]  # fmt: skip


async def shop(aiohttp_server: Any, **options: Any) -> tuple[str, dict[str, int]]:
    hits: dict[str, int] = {}
    server = await aiohttp_server(make_shop(hits=hits, **options))
    return base_url(server), hits


async def write_spider(folder: Path, source: str, name: str = "shop.py") -> str:
    await asyncio.to_thread((folder / name).write_text, textwrap.dedent(source))
    return f"{name}:Shop"


def expected_items(root: str) -> list[tuple[str, str]]:
    """(page URL, listing URL) of every product, as the shop spider stores them."""
    listing = {pid: pid // 100 for pid in all_products()}
    return sorted(
        (f"{root}product/{pid}", root if n == 0 else f"{root}?page={n}")
        for pid, n in listing.items()
    )


async def stored_items(db: Path) -> list[tuple[str, str]]:
    found = await rows(db, "SELECT url, data FROM items ORDER BY url")
    return sorted((url, json.loads(data)["listing"]) for url, data in found)


async def test_products_listed_only_in_embedded_json_are_found_and_stored(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    root, hits = await shop(aiohttp_server)
    spider = await write_spider(tmp_path, SHOP_SPIDER)
    code, _, err = await scraper_cli(
        "crawl", root, "--spider", spider, "--db", "shop.db", *FAST, cwd=tmp_path
    )
    assert code == 0, err
    db = tmp_path / "shop.db"
    assert await stored_items(db) == expected_items(root)
    # An item is the callback's dict as JSON: the name as a browser shows it, depth from meta.
    (data,) = await rows(db, f"SELECT data FROM items WHERE url = '{root}product/102'")
    assert json.loads(data[0]) == {
        "name": "Product 102",
        "price": 102 % 7 + 0.5,
        "listing": f"{root}?page=1",
        "depth": 2,
    }
    assert await rows(db, "SELECT DISTINCT callback FROM items") == [("product",)]
    # Links are followed only where a callback asks: every page links to /about, never fetched.
    assert "/about" not in hits
    assert len(await rows(db, "SELECT url FROM pages")) == LISTINGS + len(all_products())
    assert await rows(db, "SELECT count(*) FROM pages WHERE error_kind IS NOT NULL") == [(0,)]
    assert await rows(db, "SELECT status FROM crawls") == [("finished",)]


RAISING = (
    SHOP_SPIDER
    + """
    def product(self, page):
        pid = int(page.url.rsplit("/", 1)[1])
        if pid % 5 == 3:
            raise KeyError(f"no price for {pid}")
        yield {"listing": page.meta["listing"], "pid": pid}
"""
)


async def test_a_callback_that_raises_costs_its_page_only(aiohttp_server, tmp_path) -> None:
    root, _ = await shop(aiohttp_server)
    spider = await write_spider(tmp_path, RAISING)
    code, _, err = await scraper_cli(
        "crawl", root, "--spider", spider, "--db", "shop.db", *FAST, cwd=tmp_path
    )
    assert code == 0, err
    db = tmp_path / "shop.db"
    failed = [pid for pid in all_products() if pid % 5 == 3]
    expected = [item for item in expected_items(root) if int(item[0].rsplit("/", 1)[1]) % 5 != 3]
    assert await stored_items(db) == expected
    errors = await rows(db, "SELECT url, error_kind, error FROM pages WHERE error_kind IS NOT NULL")
    assert sorted(errors) == sorted(
        (f"{root}product/{pid}", "callback", f"product: KeyError: 'no price for {pid}'")
        for pid in failed
    )
    # The page itself is stored as parsed: its title, its links.
    (title,) = await rows(db, f"SELECT title FROM pages WHERE url = '{root}product/{failed[0]}'")
    assert title == (f"Product {failed[0]}",)
    assert "the spider's callback failed" in err


NEVER_RETURNS = (
    SHOP_SPIDER
    + """
    def product(self, page):
        import time
        pid = int(page.url.rsplit("/", 1)[1])
        if pid == 101:
            while True:  # computes for ever
                pass
        if pid == 202:
            time.sleep(3600)  # waits for ever
        yield {"listing": page.meta["listing"], "pid": pid}
"""
)


@pytest.mark.timeout(120)
async def test_a_callback_that_never_returns_costs_its_page_and_its_worker(
    aiohttp_server, tmp_path
) -> None:
    root, _ = await shop(aiohttp_server)
    spider = await write_spider(tmp_path, NEVER_RETURNS)
    code, _, err = await scraper_cli(
        "crawl", root, "--spider", spider, "--db", "shop.db", *FAST,
        "--set", "parse.timeout=0.5", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    db = tmp_path / "shop.db"
    stuck = {f"{root}product/101", f"{root}product/202"}
    assert await stored_items(db) == [i for i in expected_items(root) if i[0] not in stuck]
    errors = await rows(db, "SELECT url, error_kind FROM pages WHERE error_kind IS NOT NULL")
    assert sorted(errors) == sorted((url, "parse") for url in stuck)
    assert await rows(db, "SELECT status FROM crawls") == [("finished",)]


NOT_JSON = (
    SHOP_SPIDER
    + """
    def product(self, page):
        import datetime
        pid = int(page.url.rsplit("/", 1)[1])
        if pid == 3:
            yield page.follow("/product/999", meta={"when": datetime.date(2020, 1, 1)})
        if pid == 4:
            yield {"when": datetime.date(2020, 1, 1)}
        yield {"listing": page.meta["listing"], "pid": pid}
"""
)


async def test_meta_or_an_item_that_is_not_json_is_a_clear_error_on_that_page(
    aiohttp_server, tmp_path
) -> None:
    root, hits = await shop(aiohttp_server)
    spider = await write_spider(tmp_path, NOT_JSON)
    code, _, err = await scraper_cli(
        "crawl", root, "--spider", spider, "--db", "shop.db", *FAST, cwd=tmp_path
    )
    assert code == 0, err
    db = tmp_path / "shop.db"
    errors = dict(await rows(db, "SELECT url, error FROM pages WHERE error_kind = 'callback'"))
    assert errors == {
        f"{root}product/3": f"product: CallbackError: meta of the request to {root}product/999 "
        "is not JSON-serialisable: Object of type date is not JSON serializable",
        f"{root}product/4": "product: CallbackError: item 1 is not JSON-serialisable: Object of "
        "type date is not JSON serializable",
    }
    assert "/product/999" not in hits  # nothing of a failed page is kept, its requests neither
    assert len(await stored_items(db)) == len(all_products()) - 2


API_SPIDER = """
import json
import subprocess
import sys
import scraper


class Shop(scraper.Spider):
    def parse(self, page):
        for below in (2, 2, 4):  # the second is the first again: one request
            yield scraper.Request(
                "/api/search", callback="found", method="POST",
                headers={"Content-Type": "application/json", "X-Token": "t-1"},
                body=json.dumps({"below": below}), meta={"below": below},
            )
        yield page.follow("/product/1", callback="product")
        yield page.follow("/product/1", callback="product")  # the same: fetched once
        yield page.follow("/product/1", callback="product", dont_filter=True)  # again

    def found(self, page):
        data = page.json()
        yield {"below": page.meta["below"], "token": data["token"], "found": data["found"],
               "type": page.headers["content-type"].split(";")[0], "status": page.status}

    def product(self, page):
        yield {"product": page.css_first("h1").text()}
"""


async def test_a_post_with_a_json_body_is_sent_and_deduplicated_by_its_body(
    aiohttp_server, tmp_path
) -> None:
    await crawl_the_api(aiohttp_server, tmp_path, str(tmp_path / "shop.db"))


async def test_a_post_with_a_json_body_on_postgresql(aiohttp_server, tmp_path, pg_url) -> None:
    await crawl_the_api(aiohttp_server, tmp_path, pg_url)


async def crawl_the_api(aiohttp_server: Any, tmp_path: Path, db: str) -> None:
    root, hits = await shop(aiohttp_server)
    spider = await write_spider(tmp_path, API_SPIDER)
    code, _, err = await scraper_cli(
        "crawl", root, "--spider", spider, "--db", db, *FAST, cwd=tmp_path
    )
    assert code == 0, err
    code, out, err = await scraper_cli(
        "query", "--db", db, "--format", "json", "SELECT url, data FROM items", cwd=tmp_path
    )
    assert code == 0, err
    stored = json.loads(out)
    assert hits["POST /api/search"] == 2  # below 2 and below 4; the repeat was not sent
    assert hits["/product/1"] == 2  # once, and once more for dont_filter
    found = [json.loads(row["data"]) for row in stored]
    searches = sorted((f for f in found if "below" in f), key=lambda f: f["below"])
    every = all_products()
    assert searches == [
        {"below": b, "token": "t-1", "found": [p for p in every if p % 7 + 0.5 < b],
         "type": "application/json", "status": 200}
        for b in (2, 4)
    ]  # fmt: skip
    assert [f for f in found if "product" in f] == [{"product": "Product 1"}] * 2
    # The POSTs are pages of their own: the URL with a fragment naming method and body.
    posts = {row["url"] for row in stored if "#POST-" in row["url"]}
    assert len(posts) == 2 and all(url.startswith(f"{root}api/search#POST-") for url in posts)


BIG: dict[str, Any] = {"listings": 8, "per_listing": 12, "latency": 0.01}


@pytest.mark.parametrize("after_hits", [5, 40, 90])
async def test_kill_9_then_resume_gives_every_item_exactly_once(
    aiohttp_server, tmp_path, after_hits
) -> None:
    root, hits = await shop(aiohttp_server, **BIG)
    spider = await write_spider(tmp_path, SHOP_SPIDER)
    line = [*SCRAPER, "crawl", root, "--spider", spider, "--db", "shop.db", *FAST,
            "--concurrency", "4", "--set", "storage.batch_size=5"]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *line, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    while sum(hits.values()) < after_hits:
        assert process.returncode is None, await process.communicate()
        await asyncio.sleep(0.005)
    process.kill()
    await asyncio.wait_for(process.communicate(), 10)
    code, _, err = await scraper_cli(*line[3:], cwd=tmp_path)
    assert code == 0, err
    assert "resuming crawl 1" in err
    db = tmp_path / "shop.db"
    products = all_products(BIG["listings"], BIG["per_listing"])
    listing = {pid: pid // 100 for pid in products}
    assert await stored_items(db) == sorted(
        (f"{root}product/{pid}", root if n == 0 else f"{root}?page={n}")
        for pid, n in listing.items()
    )
    assert await rows(db, "SELECT count(*), count(DISTINCT url) FROM items") == [
        (len(products), len(products))
    ]
    assert await rows(db, "SELECT id, status FROM crawls") == [(1, "finished")]


PIPELINE = (
    SHOP_SPIDER
    + """
    def process_item(self, item, page):
        if item["price"] < 2:
            return None  # dropped
        item["currency"] = "EUR"  # enriched
        item["name"] = "=" + item["name"]  # what a spreadsheet would run, from a hostile page
        item["tags"] = ["a", "b"]
        return item
"""
)


async def test_process_item_drops_and_enriches_and_export_items_writes_them(
    aiohttp_server, tmp_path
) -> None:
    root, _ = await shop(aiohttp_server)
    spider = await write_spider(tmp_path, PIPELINE)
    code, _, err = await scraper_cli(
        "crawl", root, "--spider", spider, "--db", "shop.db", *FAST, cwd=tmp_path
    )
    assert code == 0, err
    kept = [pid for pid in all_products() if pid % 7 + 0.5 >= 2]
    code, out, err = await scraper_cli("export", "--items", "--db", "shop.db", cwd=tmp_path)
    assert code == 0, err
    items = [json.loads(line) for line in out.splitlines()]
    assert sorted(item["name"] for item in items) == sorted(f"=Product {p}" for p in kept)
    assert all(item["currency"] == "EUR" and item["tags"] == ["a", "b"] for item in items)
    code, out, err = await scraper_cli(
        "export", "--items", "--format", "csv", "--db", "shop.db", cwd=tmp_path
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "name,price,listing,depth,currency,tags"
    assert len(lines) == 1 + len(kept)
    assert all(line.startswith("'=Product ") for line in lines[1:])  # formula-safe
    assert all(line.endswith(',EUR,"[""a"", ""b""]"') for line in lines[1:])
    code, out, err = await scraper_cli("stats", "--db", "shop.db", cwd=tmp_path)
    assert code == 0, err
    assert f"items:     {len(kept)} (product {len(kept)}), from {len(kept)} pages" in out


async def test_scraper_parse_prints_what_a_callback_yields(aiohttp_server, tmp_path) -> None:
    root, hits = await shop(aiohttp_server)
    spider = await write_spider(tmp_path, SHOP_SPIDER)
    code, out, err = await scraper_cli(
        "parse", f"{root}product/3", "--spider", spider, "--callback", "product",
        "--meta", '{"listing": "from the command line"}', cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {
        "url": f"{root}product/3",
        "status": 200,
        "callback": "product",
        "items": [{"name": "Product 3", "price": 3.5, "listing": "from the command line",
                   "depth": 0}],
        "requests": [],
        "error": None,
    }  # fmt: skip
    code, out, err = await scraper_cli("parse", root, "--spider", spider, cwd=tmp_path)
    assert code == 0, err
    requests = json.loads(out)["requests"]
    assert [r["url"] for r in requests] == [f"{root}product/{p}" for p in range(5)] + [
        f"{root}?page=1"
    ]
    assert requests[0]["callback"] == "product" and requests[0]["meta"] == {"listing": root}
    assert requests[-1]["callback"] == "parse"
    assert "/about" not in hits  # one page fetched, nothing followed
    # A callback that raises: the error in the JSON, the traceback on stderr, exit code 1.
    raising = await write_spider(tmp_path, RAISING, "raising.py")
    code, out, err = await scraper_cli(
        "parse", f"{root}product/3", "--spider", raising, "--callback", "product", cwd=tmp_path
    )
    assert code == 1
    assert json.loads(out)["error"] == "product: KeyError: 'no price for 3'"
    assert "Traceback" in err and "raise KeyError" in err
    # Bad input: one line, exit code 2.
    for args in (["--spider", "nowhere.py:Shop"], ["--spider", spider, "--meta", "[1]"]):
        code, _, err = await scraper_cli("parse", root, *args, cwd=tmp_path)
        assert code == 2 and len(err.strip().splitlines()) == 1, err


LIBRARY_SCRIPT = (
    SHOP_SPIDER
    + """

import asyncio
import sqlite3
import sys
import time

SETTINGS = {"parse.workers": 1, "crawl.sitemaps": False, "fetch.retry_backoff": 0.01}


def crawl_status(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT status FROM crawls").fetchone()[0]


async def main(root):
    seen = []
    async with scraper.Crawl([root], spider=Shop, db="lib.db", settings=SETTINGS) as run:
        async for item in run.items():
            seen.append(item)
            if len(seen) == 1:
                # A consumer far behind: the crawl goes on, and ends, without it.
                deadline = time.monotonic() + 60
                while await asyncio.to_thread(crawl_status, "lib.db") != "finished":
                    assert time.monotonic() < deadline, "the crawl waited for its consumer"
                    await asyncio.sleep(0.05)
    return seen, run.summary


if __name__ == "__main__":
    seen, summary = asyncio.run(main(sys.argv[1]))
    again = scraper.crawl([sys.argv[1]], spider=Shop, db="lib2.db", settings=SETTINGS)
    print(json.dumps({"items": seen, "pages": summary.pages, "status": summary.status,
                      "again": [again.pages, again.status]}))
"""
)


async def test_the_library_from_a_script_yields_every_item_once(aiohttp_server, tmp_path) -> None:
    root, _ = await shop(aiohttp_server)
    await asyncio.to_thread((tmp_path / "crawl_shop.py").write_text, LIBRARY_SCRIPT)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "crawl_shop.py", root, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    result = json.loads(out)
    pages = LISTINGS + len(all_products())
    assert result["status"] == "finished" and result["pages"] == pages
    assert sorted((i["name"], i["listing"]) for i in result["items"]) == sorted(
        (f"Product {pid}", root if pid < 100 else f"{root}?page={pid // 100}")
        for pid in all_products()
    )
    assert result["again"] == [pages, "finished"]


async def test_bad_spiders_are_one_line_and_exit_code_2(tmp_path) -> None:
    spider = await write_spider(tmp_path, SHOP_SPIDER)
    await asyncio.to_thread((tmp_path / "broken.py").write_text, "import scraper\nclass Shop(:\n")
    await asyncio.to_thread((tmp_path / "plain.py").write_text, "class Shop:\n    pass\n")
    cases = {
        ("--spider", "shop.py"): "give FILE.py:Class or module.path:Class",
        ("--spider", "missing.py:Shop"): "no such file",
        ("--spider", "shop.py:Nope"): "no class Nope",
        ("--spider", "broken.py:Shop"): "importing it raised SyntaxError",
        ("--spider", "plain.py:Shop"): "not a subclass of scraper.Spider",
        ("--spider", "no.such.module:Shop"): "No module named 'no'",
        ("--spider", spider, "--set", "parse.workers=0"): "where a spider's callbacks may not run",
    }
    for args, said in cases.items():
        code, _, err = await scraper_cli(
            "crawl", "http://127.0.0.1:9/", *args, "--db", "x.db", "-q", cwd=tmp_path
        )
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and said in err, (args, err)


SETTINGS_SPIDER = SHOP_SPIDER.replace(
    'name = "shop"',
    'name = "shop"\n    start_urls = ["ROOT"]\n    allowed_domains = ["127.0.0.1"]\n'
    '    settings = {"crawl.max_pages": 5, "storage.batch_size": 3}',
)


async def test_a_module_spider_from_config_with_its_settings_below_set(
    aiohttp_server, tmp_path
) -> None:
    root, _ = await shop(aiohttp_server)
    package = tmp_path / "shopspiders"
    await asyncio.to_thread(package.mkdir)
    await asyncio.to_thread((package / "__init__.py").write_text, "")
    source = textwrap.dedent(SETTINGS_SPIDER).replace("ROOT", root)
    await asyncio.to_thread((package / "shop.py").write_text, source)
    config = '[crawl]\nspider = "shopspiders.shop:Shop"\nmax_pages = 3\nsitemaps = false\n'
    await asyncio.to_thread((tmp_path / "config.toml").write_text, config)
    # No seeds on the command line: the spider's start_urls; its max_pages over config.toml's.
    code, _, err = await scraper_cli("crawl", "--db", "a.db", "-q", cwd=tmp_path)
    assert code == 0, err
    assert await rows(tmp_path / "a.db", "SELECT count(*) FROM pages") == [(5,)]
    # --set over the spider's settings.
    code, _, err = await scraper_cli(
        "crawl", "--db", "b.db", "-q", "--set", "crawl.max_pages=7", cwd=tmp_path
    )
    assert code == 0, err
    assert await rows(tmp_path / "b.db", "SELECT count(*) FROM pages") == [(7,)]
    (config_json,) = (await rows(tmp_path / "b.db", "SELECT config FROM crawls"))[0]
    assert json.loads(config_json)["crawl"]["spider"] == "shopspiders.shop:Shop"
    assert json.loads(config_json)["storage"]["batch_size"] == 3
