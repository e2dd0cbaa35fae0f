"""A callback on a page, in-process: the page API, what a callback may yield, requests' identity
and scope, process_item, and the errors that cost the page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scraper.models import ParseJob, SpiderCall, request_key
from scraper.parse.page import parse_page
from scraper.spider.load import find_spider
from scraper.urls import Scope

HTML = b"""<html><head><base href="http://shop.test/dir/"><title>T</title>
<script id="data" type="application/json">{"ids": [1, 2], "html": "<b>x</b>"}</script>
<style>p { color: red }</style></head>
<body><h1>Hello <b>world</b></h1><a class="next" href="page2">next</a>
<a href="mailto:x@shop.test">mail</a><a href="http://elsewhere.test/">out</a>
<p data-x="1">one</p><p>two</p></body></html>"""

SPIDER = """
import json
import scraper


class Shop(scraper.Spider):
    def parse(self, page):
        data = json.loads(page.css_first("script#data").text())
        h1 = page.css_first("h1")
        yield {
            "ids": data["ids"], "html": data["html"], "h1": h1.text(), "b": h1.css_first("b").html,
            "style": page.css_first("style").text(), "x": page.css("p")[0].attr("data-x"),
            "none": page.css_first("p").attr("nope"), "ps": [p.text() for p in page.css("p")],
            "type": page.headers["CONTENT-TYPE"], "status": page.status, "meta": page.meta,
            "depth": page.depth, "base": page.base, "text": page.text_body[:6],
        }
        yield page.follow(page.css_first("a.next"), callback="other", meta={"n": 1})
        yield page.follow("mailto:x@shop.test")            # not http(s): dropped
        yield scraper.Request("http://elsewhere.test/")    # outside the scope: dropped
        yield scraper.Request("/api", method="post", body="{}")
        yield scraper.Request("/api", method="POST", body="{}", dont_filter=True)
        yield None

    def other(self, page):
        return [{"n": page.meta["n"]}]

    def returns_a_string(self, page):
        return "oops"

    def bad_callback(self, page):
        yield page.follow("x", callback="nope")

    def secret(self, page):
        yield page.follow("x", headers={"Authorization": "Bearer s3cret"})

    def process_item(self, item, page):
        if item.get("n") == 2:
            return None
        return item
"""


@pytest.fixture
def spider(tmp_path: Path):
    (tmp_path / "s.py").write_text(SPIDER)
    return find_spider("s.py:Shop", cwd=str(tmp_path))[1]


def call(spider, callback="parse", meta=None, body=HTML, url="http://shop.test/dir/list"):
    job = ParseJob(
        url=url,
        body=body,
        content_type="text/html",
        scope=Scope(allowed_domains=("shop.test",)),
        spider=SpiderCall(spider, callback, json.dumps(meta) if meta else None, 200,
                          (("Content-Type", "text/html"),), 3, url),
    )  # fmt: skip
    return parse_page(job)


def test_the_page_api(spider) -> None:
    result = call(spider, meta={"from": "a"})
    assert result.callback_error is None, result.callback_trace
    (item,) = [json.loads(i) for i in result.items]
    assert item == {
        "ids": [1, 2], "html": "<b>x</b>", "h1": "Hello world", "b": "<b>world</b>",
        "style": "p { color: red }", "x": "1", "none": None, "ps": ["one", "two"],
        "type": "text/html", "status": 200, "meta": {"from": "a"}, "depth": 3,
        "base": "http://shop.test/dir/", "text": "<html>",
    }  # fmt: skip
    assert result.follow == ()  # links are followed only where a callback asks
    assert "http://shop.test/dir/page2" in result.links  # (and still stored)


def test_requests_resolved_scoped_and_identified(spider) -> None:
    requests = call(spider).requests
    assert [(r.url, r.callback, r.meta, r.verb) for r in requests] == [
        ("http://shop.test/dir/page2", "other", '{"n": 1}', "GET"),
        ("http://shop.test/api", None, None, "POST"),
        ("http://shop.test/api", None, None, "POST"),
    ]
    page2, post, again = requests
    assert page2.identity == page2.url and page2.key is None
    assert post.identity == request_key("http://shop.test/api", "POST", b"{}", None)
    assert post.identity.startswith("http://shop.test/api#POST-")
    assert again.identity != post.identity  # dont_filter: an identity of its own
    # ...derived from the yielding page and its place: the same when parsed again.
    assert call(spider).requests[2].identity == again.identity


def test_request_keys() -> None:
    url = "http://a.test/x"
    assert request_key(url, "GET", None, None) is None  # a plain GET is its URL
    assert request_key(url, "GET", b"", None) is None
    assert request_key(url, "POST", b"1", None) != request_key(url, "POST", b"2", None)
    assert request_key(url, "POST", b"1", None) != request_key(url, "PUT", b"1", None)
    assert request_key(url, "GET", None, "page 1") != request_key(url, "GET", None, "page 2")


def test_a_returned_list_and_process_item(spider) -> None:
    result = call(spider, "other", meta={"n": 5})
    assert result.items == ('{"n": 5}',)
    assert call(spider, "other", meta={"n": 2}).items == ()  # dropped by process_item


@pytest.mark.parametrize(
    ("callback", "error"),
    [
        ("returns_a_string", "returns_a_string: CallbackError: returned a str: a callback"),
        ("bad_callback", "bad_callback: CallbackError: request to http://shop.test/dir/x: the "
                         "spider has no method 'nope'"),
        ("missing", "missing: CallbackError: the spider has no method 'missing'"),
        ("secret", "secret: CallbackError: request to http://shop.test/dir/x: a request is "
                   "stored in the frontier (to be sent again after a resume), and credentials "
                   "never are: no authorization header"),
    ],
)  # fmt: skip
def test_what_cannot_be_stored_is_the_pages_error(spider, callback, error) -> None:
    result = call(spider, callback)
    assert result.callback_error is not None and result.callback_error.startswith(error)
    assert result.items == () and result.requests == ()
    assert result.title == "T"  # the page itself is parsed as ever


def test_a_json_response(spider, tmp_path) -> None:
    (tmp_path / "j.py").write_text(
        "import scraper\nclass Shop(scraper.Spider):\n"
        "    def parse(self, page):\n        yield {'got': page.json()['a']}\n"
    )
    ref = find_spider("j.py:Shop", cwd=str(tmp_path))[1]
    result = call(ref, body=b'{"a": [1, "\\u00e9"]}')
    assert result.items == ('{"got": [1, "é"]}',)  # stored as UTF-8 JSON
