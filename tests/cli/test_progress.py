"""Progress while a crawl runs, through real subprocesses: a live display on a pseudo-terminal,
plain log lines through a pipe, nothing but the summary with --quiet."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
from pathlib import Path

import pytest

from helpers import SCRAPER, base_url, scraper_cli
from scraper.cli.progress import format_line
from scraper.demosite import SiteSpec, make_app
from scraper.models import CrawlSnapshot

# Slow enough (40 pages, 50 ms each, 2 at a time: about a second) for several progress updates.
SITE = SiteSpec(pages=40, page_bytes=2000, latency=0.05, extras=False)
PAGES = len(SITE.reachable())
ESCAPE = "\x1b["
LINE = re.compile(r"INFO scraper\.progress: (\d+) pages, [\d.]+ pages/s, queued \d+, in flight")


@pytest.fixture
async def site_url(aiohttp_server) -> str:
    return base_url(await aiohttp_server(make_app(SITE)))


def crawl_args(url: str, tmp_path: Path, *more: str) -> list[str]:
    return ["crawl", url, "--db", str(tmp_path / "p.db"), "--concurrency", "2", *more]


def read_until_closed(fd: int) -> bytes:
    """All a pseudo-terminal's child wrote; Linux reports the end with EIO."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_terminal_gets_the_live_display(site_url: str, tmp_path: Path) -> None:
    controller, terminal = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    process = await asyncio.create_subprocess_exec(
        *SCRAPER,
        *crawl_args(site_url, tmp_path, "--max-pages", "30"),
        cwd=tmp_path,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    try:
        output = (await asyncio.to_thread(read_until_closed, controller)).decode()
    finally:
        os.close(controller)
    assert await asyncio.wait_for(process.wait(), 60) == 0, output
    assert ESCAPE in output  # drawn and redrawn in place
    assert "crawling" in output
    assert re.search(r"\d+/30", output)  # the bar's count, bounded by --max-pages
    assert "pages/s" in output
    assert "in flight" in output
    assert "ETA" in output
    assert "Crawl 1 finished: 30 pages" in output
    assert "scraper.progress" not in output  # no plain lines on a terminal


async def test_a_pipe_gets_plain_lines_every_interval(site_url: str, tmp_path: Path) -> None:
    code, out, err = await scraper_cli(
        *crawl_args(site_url, tmp_path, "--set", "log.interval=0.2"), cwd=tmp_path
    )
    assert code == 0, err
    counts = [int(m.group(1)) for m in LINE.finditer(err)]
    assert len(counts) >= 3, err
    assert counts == sorted(counts)
    opening, *lines = err.strip().splitlines()
    assert opening == "scraper: config: none (defaults, --set and seeds)"
    assert len(lines) == len(counts)  # nothing else on stderr
    assert ESCAPE not in out + err
    assert out.startswith(f"Crawl 1 finished: {PAGES} pages")


async def test_quiet_shows_only_the_summary(site_url: str, tmp_path: Path) -> None:
    code, out, err = await scraper_cli(
        *crawl_args(site_url, tmp_path, "--set", "log.interval=0.2", "--quiet"), cwd=tmp_path
    )
    assert code == 0, err
    assert err == ""
    assert out.startswith(f"Crawl 1 finished: {PAGES} pages")


async def test_json_log_lines_to_a_file(site_url: str, tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "crawl.jsonl"
    code, _, err = await scraper_cli(
        *crawl_args(site_url, tmp_path, "--set", "log.interval=0.2"),
        "--log-format",
        "json",
        "--log-file",
        str(log_file),
        cwd=tmp_path,
    )
    assert code == 0, err
    text = await asyncio.to_thread(log_file.read_text)
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) >= 3
    assert [json.loads(line) for line in err.splitlines()] == records  # stderr too
    for record in records:
        assert record["logger"] == "scraper.progress"
        assert record["level"] == "INFO"
        assert record["time"].startswith("20")
        assert 0 <= record["progress"]["pages"] <= PAGES
        assert set(record["progress"]) >= {"queued", "in_flight", "errors", "bytes", "rate"}
        assert set(record["progress"]["loop_lag_ms"]) == {"p50", "p99", "max"}


def test_the_plain_line_reads_well() -> None:
    snapshot = CrawlSnapshot(
        pages=120, errors=3, bytes=1_200_000, queued=80, in_flight=16,
        loop_lag_p50_ms=0.42, loop_lag_p99_ms=7.51, loop_lag_max_ms=30.2,
    )  # fmt: skip
    assert format_line(snapshot, 38.24, 12.2) == (
        "120 pages, 38.2 pages/s, queued 80, in flight 16, errors 3, 1.2 MB, "
        "loop lag 0.4/7.5/30 ms, 12 s"
    )
    bounded = CrawlSnapshot(pages=100, max_pages=200)
    line = format_line(bounded, 10.0, 10.0)
    assert line.startswith("100/200 pages, 10.0 pages/s")
    assert line.endswith(", ETA 10 s")


def test_a_fleet_s_line_shows_the_crawl_s_counts_and_this_process_s_beside_them() -> None:
    fleet = CrawlSnapshot(
        pages=500, queued=100_000, queued_capped=True, in_flight=12, processes=3,
        here_queued=40, here_in_flight=4,
    )  # fmt: skip
    line = format_line(fleet, 20.0, 5.0)
    assert "queued 100000+ (here 40), in flight 12 (here 4), " in line
    alone = CrawlSnapshot(queued=7, in_flight=2, here_queued=7, here_in_flight=2)
    assert "queued 7, in flight 2, " in format_line(alone, 1.0, 1.0)  # one process: as before
