"""`scraper report`: one offline HTML file whose charts render, checked in headless Chromium."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from selectolax.lexbor import LexborHTMLParser

from helpers import base_url, chromium, rendered_dom, rows, scraper_cli
from scraper.demosite import SiteSpec, make_app

SITE = SiteSpec(pages=40, page_bytes=2000, error_rate=0.15, extras=False)
CHARTS = ("throughput", "status", "latency", "depth", "content-types")


@pytest.fixture
async def crawled(aiohttp_server, tmp_path: Path) -> Path:
    server = await aiohttp_server(make_app(SITE))
    db = tmp_path / "crawl.db"
    code, _, err = await scraper_cli(
        "crawl", base_url(server), "--db", str(db), "--quiet", "--set", "fetch.retries=0",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    return db


async def test_the_report_renders_its_charts_offline(crawled: Path, tmp_path: Path) -> None:
    chromium()
    code, out, err = await scraper_cli("report", "--db", str(crawled), cwd=tmp_path)
    assert code == 0, err
    page = tmp_path / "crawl-report.html"  # beside the database by default
    assert out.startswith(f"Report on crawl 1: {page}")

    source = LexborHTMLParser(await asyncio.to_thread(page.read_text, encoding="utf-8"))
    assert not source.css("script[src], link[href], img[src], iframe")  # nothing to fetch
    assert len(source.css_first("script").text()) > 1_000_000  # plotly.js, inlined

    dom = await rendered_dom(page, tmp_path / "chromium-profile")  # a fresh profile
    for name in CHARTS:
        chart = dom.css_first(f"#chart-{name}")
        assert chart is not None, name
        assert chart.css("svg.main-svg"), f"{name}: plotly drew nothing"
        assert chart.css("g.trace path, g.trace .point"), f"{name}: no data drawn"
    bars = dom.css("#chart-status g.point path")
    (statuses,) = await rows(crawled, "SELECT count(DISTINCT status) FROM pages")
    assert len(bars) == statuses[0] == 2  # 200 and 500
    # Each status bar says its count (a few errors beside many pages are not a sliver).
    by_status = dict(await rows(crawled, "SELECT status, count(*) FROM pages GROUP BY status"))
    labels = sorted(int(t.text()) for t in dom.css("#chart-status text.bartext"))
    assert labels == sorted(by_status.values())
    ticks = [t.text() for t in dom.css("#chart-depth g.xtick text")]
    assert ticks and all(tick.isdigit() for tick in ticks)  # whole depths, no 0.5
    types = await rows(crawled, "SELECT DISTINCT lower(content_type) FROM pages")
    expected = {(t or "none").split(";")[0].strip() for (t,) in types}
    assert {t.text() for t in dom.css("#chart-content-types g.xtick text")} == expected

    errors = await rows(crawled, "SELECT url FROM pages WHERE error_kind IS NOT NULL ORDER BY url")
    assert errors
    cells = [row.css_first("td").text() for row in dom.css("#error-pages tr")[1:]]
    assert sorted(cells) == [url for (url,) in errors]


async def test_report_user_errors(crawled: Path, tmp_path: Path) -> None:
    for args, needle in [
        (["--crawl", "3"], "--crawl 3: no such crawl (this database has crawl 1)"),
        (["--out", "/proc/nope/r.html"], "--out /proc/nope/r.html: cannot write there"),
    ]:
        code, _, err = await scraper_cli("report", "--db", str(crawled), *args, cwd=tmp_path)
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"scraper: error: {needle}")
    left = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.iterdir()))
    assert "crawl-report.html" not in left


def test_a_postgresql_report_goes_where_results_go() -> None:
    from scraper.results.report import default_path

    assert default_path("postgresql://me@localhost:5432/crawls") == Path("data/crawls-report.html")
    assert default_path("data/x.db") == Path("data/x-report.html")


def test_content_types_are_folded_and_bounded() -> None:
    from scraper.results.report import MAX_CONTENT_TYPES, content_types

    rows = [("text/html; charset=UTF-8", 5), ("Text/HTML", 2), (None, 1), ("application/pdf", 1)]
    rows += [(f"x/y{n}", 1) for n in range(30)]  # a site that sends a new type every page
    kinds = content_types(rows)
    assert next(iter(kinds)) == "text/html" and kinds["text/html"] == 7 and kinds["none"] == 1
    assert len(kinds) == MAX_CONTENT_TYPES + 1 and sum(kinds.values()) == 39
