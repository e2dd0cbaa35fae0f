"""`scraper stats` and the end-of-crawl summary, computed from the database."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from helpers import SCRAPER, base_url, rows, scraper_cli
from scraper.demosite import STATE, SiteSpec, make_app
from scraper.results.stats import CrawlStats, format_stats, percentiles
from scraper.store.base import HostCount

SITE = SiteSpec(pages=40, page_bytes=2000, error_rate=0.2, extras=False)
WORKING = next(i for i in range(SITE.pages) if not SITE.fails(i))


@pytest.fixture
async def crawled(aiohttp_server, tmp_path: Path) -> tuple[Path, str]:
    """A database crawled twice from one site; returns it and the crawl's first summary."""
    server = await aiohttp_server(make_app(SITE))
    db = tmp_path / "s.db"
    code, out, err = await scraper_cli(
        "crawl", base_url(server), "--db", str(db), "--set", "fetch.retries=0", cwd=tmp_path
    )
    assert code == 0, err
    code, _, err = await scraper_cli(
        "crawl", f"{base_url(server)}page/{WORKING}", "--db", str(db), "--set", "crawl.max_depth=0",
        "--max-pages", "1", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    return db, out


def line(summary: str, label: str) -> str:
    (found,) = [s for s in summary.splitlines() if s.strip().startswith(label)]
    return found.split(":", 1)[1].strip()


async def test_the_summary_agrees_with_the_database(crawled: tuple[Path, str]) -> None:
    db, summary = crawled
    pages = len(SITE.reachable())
    failing = sum(SITE.fails(i) for i in range(SITE.pages) if f"/page/{i}" in SITE.reachable())
    assert failing > 0
    assert summary.startswith(f"Crawl 1 finished: {pages} pages in ")
    assert line(summary, "by status") == f"2xx {pages - failing}, 5xx {failing}"
    assert line(summary, "errors") == f"http {failing}"
    assert re.fullmatch(rf"127\.0\.0\.1:\d+ {pages} \({failing} errors\)", line(summary, "top"))
    assert re.fullmatch(r"p50 [\d,]+ ms, p95 [\d,]+ ms, p99 [\d,]+ ms", line(summary, "latency"))
    assert str(db) in line(summary, "results")

    # `scraper stats` says the same for the first crawl (bar the page the second crawl took over)
    code, out, err = await scraper_cli("stats", "--db", str(db), "--crawl", "1", cwd=db.parent)
    assert code == 0, err
    assert out.startswith(f"Crawl 1 finished: {pages - 1} pages in ")
    ((duration,),) = await rows(db, "SELECT duration_s FROM crawls WHERE id = 1")
    assert f"in {duration:.1f} s" in out

    # and the latest crawl by default
    code, out, _ = await scraper_cli("stats", "--db", str(db), cwd=db.parent)
    assert out.startswith("Crawl 2 finished: 1 pages in ")
    assert line(out, "by status") == "2xx 1"

    for args, needle in [
        (["--crawl", "9"], "--crawl 9: no such crawl (this database has crawl 1 to 2)"),
        (["--db", "absent.db"], "absent.db: no such database"),
    ]:
        code, _, err = await scraper_cli("stats", "--db", str(db), *args, cwd=db.parent)
        assert code == 2
        assert err.startswith("scraper: error: ")
        assert len(err.strip().splitlines()) == 1
        assert needle in err


async def test_stats_of_a_crawl_still_running(aiohttp_server, tmp_path: Path) -> None:
    stored = asyncio.Event()
    release = asyncio.Event()

    @web.middleware
    async def hold(request: web.Request, handler):
        # Let the crawl store its first pages, then hold every request until stats have run.
        if len(request.app[STATE].hits) > 3:
            stored.set()
            await release.wait()
        return await handler(request)

    app = make_app(SiteSpec(pages=50, page_bytes=1000, extras=False))
    app.middlewares.append(hold)
    server = await aiohttp_server(app)
    db = tmp_path / "r.db"
    crawl = await asyncio.create_subprocess_exec(
        *SCRAPER, "crawl", base_url(server), "--db", str(db), "--quiet",
        "--set", "storage.flush_interval=0.05", "--concurrency", "2",
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.wait_for(stored.wait(), 60)
        for _ in range(100):  # until the sink has committed what it was given
            if await rows(db, "SELECT 1 FROM pages LIMIT 1"):
                break
            await asyncio.sleep(0.05)
        code, out, err = await scraper_cli("stats", "--db", str(db), cwd=tmp_path)
        assert code == 0, err
        assert re.match(r"Crawl 1 running: [1-9]\d* pages in [\d.]+ s", out), out
    finally:
        release.set()
        await asyncio.wait_for(crawl.communicate(), 60)
    assert crawl.returncode == 0


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(iter(values), 100) == {50: 50.0, 95: 95.0, 99: 99.0}
    assert percentiles(iter([7.0]), 1) == {50: 7.0, 95: 7.0, 99: 7.0}
    assert percentiles(iter([1.0, 2.0, 3.0]), 3, (1, 50, 100)) == {1: 1.0, 50: 2.0, 100: 3.0}
    assert percentiles(iter([]), 0) == {}


def test_the_summary_shows_what_a_site_sent_as_escapes() -> None:
    """Error kinds and host names end up in the summary; none of their bytes act on a terminal."""
    stats = CrawlStats(
        crawl_id=1,
        status="finished",
        db="data/x.db",
        duration_s=1.0,
        pages=2,
        errors=1,
        bytes=10,
        by_error={"http\x1b[2J": 1},
        top_hosts=(HostCount("evil\x1b]8;;http://127.0.0.1/\x07x", 2, 1),),
        host_settings={"a\u202eb": {"concurrency": 1, "delay_s": 0.0}},
    )
    text = format_stats(stats)
    assert not re.search("[\x00-\x09\x0b-\x1f\x7f\u202e]", text)
    assert "http\\x1b[2J 1" in text and "evil\\x1b]8;;" in text and "a\\u202eb" in text
