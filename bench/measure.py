"""One crawler, one run: what it cost and whether it stored every page exactly once.

Each crawler runs as its own process tree under `bench.rusage`, in a temp folder (never
the repo, whose config.toml names a public site). CPU is the exact user+sys of the whole tree
(from the wrapper); memory is sampled every `SAMPLE_INTERVAL`: the main process's peak is its
kernel high-water mark (VmHWM, exact up to the last sample), the tree's is the largest sum of RSS
seen at one sample (pages shared between processes count once per process), and never less than
the main process's peak.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

SAMPLE_INTERVAL = 0.2
MB = 1024 * 1024

CommandFactory = Callable[[str, str, int, int], list[str]]  # (seed, db, concurrency, workers)


def ours(seed: str, db: str, concurrency: int, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "scraper", "crawl", seed, "--db", db),
        *("--concurrency", str(concurrency), "--set", f"parse.workers={workers}"),
        # One host: its slots are sized like the global cap, as Scrapy's per-domain limit is.
        # Every other default stays on: robots.txt, sitemaps, autothrottle, the disk frontier.
        *("--set", f"fetch.per_host_concurrency={concurrency}"),
        *("--set", 'extract.price="p.price"'),  # the same CSS field the others extract
    ]


def ours_spider(seed: str, db: str, concurrency: int, workers: int) -> list[str]:
    """Ours with a spider (bench/spider_crawl.py) doing what `ours`'s rule and links do."""
    spider = Path(__file__).with_name("spider_crawl.py")
    return [
        *(sys.executable, "-m", "scraper", "crawl", seed, "--db", db),
        *("--spider", f"{spider}:BenchSpider"),
        *("--concurrency", str(concurrency), "--set", f"parse.workers={workers}"),
        *("--set", f"fetch.per_host_concurrency={concurrency}"),
    ]


def ours_shop(seed: str, db: str, concurrency: int, workers: int) -> list[str]:
    """Ours with the shop case's spider (bench/shop_spider.py), at its fastest settings as the
    issue asks of both: no visible-text pass (the spider reads none), no robots.txt nor
    sitemaps (Scrapy's spider reads neither)."""
    spider = Path(__file__).with_name("shop_spider.py")
    return [
        *(sys.executable, "-m", "scraper", "crawl", seed, "--db", db),
        *("--spider", f"{spider}:ShopSpider"),
        *("--concurrency", str(concurrency), "--set", f"parse.workers={workers}"),
        *("--set", f"fetch.per_host_concurrency={concurrency}"),
        *("--set", 'parse.text="off"', "--set", "crawl.obey_robots=false"),
        *("--set", "crawl.sitemaps=false"),
    ]


def scrapy_shop(seed: str, db: str, concurrency: int, workers: int) -> list[str]:
    module = "bench.scrapy_shop"
    return [sys.executable, "-m", module, seed, "--db", db, "--concurrency", str(concurrency)]


def ours_warc(seed: str, db: str, concurrency: int, workers: int) -> list[str]:
    """Ours, archiving every fetch into WARC files beside the database (storage.warc)."""
    return [*ours(seed, db, concurrency, workers), "--warc", str(Path(db).parent / "warc")]


def scrapy(seed: str, db: str, concurrency: int, workers: int) -> list[str]:
    module = "bench.scrapy_crawl"
    return [sys.executable, "-m", module, seed, "--db", db, "--concurrency", str(concurrency)]


def bare(seed: str, db: str, concurrency: int, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "bench.bare", seed, "--db", db),
        *("--concurrency", str(concurrency), "--parse-workers", str(workers)),
    ]


def bare_inline(seed: str, db: str, concurrency: int, workers: int) -> list[str]:
    return bare(seed, db, concurrency, 0)


CRAWLERS: dict[str, CommandFactory] = {
    "ours": ours,
    "ours-spider": ours_spider,
    "ours-shop": ours_shop,
    "ours-warc": ours_warc,
    "scrapy": scrapy,
    "scrapy-shop": scrapy_shop,
    "bare": bare,
    "bare-inline": bare_inline,
}


@dataclass(frozen=True, slots=True)
class Usage:
    wall_s: float
    cpu_s: float
    main_peak_rss: int  # bytes
    tree_peak_rss: int  # bytes
    returncode: int
    timed_out: bool
    # CPU seconds by where they were spent, as last sampled (so a little under cpu_s): the main
    # process's own thread (the event loop, for us), its other threads, and its child processes.
    loop_thread_s: float = 0.0
    other_threads_s: float = 0.0
    children_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Stored:
    """What a crawl left in its database, compared with the pages it should have stored."""

    rows: int
    distinct: int
    missing: int  # expected URLs not stored
    unexpected: int  # stored URLs not expected
    errors: int  # rows recording a failed fetch
    span_s: float  # from the first fetch to the last
    counters: dict[str, Any]  # ours only: the crawl's counters JSON

    @property
    def once_each(self) -> bool:
        return self.rows == self.distinct and not self.missing and not self.unexpected


@dataclass(frozen=True, slots=True)
class RunResult:
    crawler: str
    usage: Usage
    stored: Stored

    @property
    def pages(self) -> int:
        return self.stored.rows

    @property
    def pages_per_s(self) -> float:
        """Throughput while crawling: pages over the span between the first and last fetch
        (process start-up and shutdown are in `wall_s` and in the CPU figure)."""
        span = self.stored.span_s
        return (self.pages - 1) / span if span > 0 and self.pages > 1 else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return self.usage.cpu_s / self.pages * 1000 if self.pages else 0.0


def run_crawler(
    name: str,
    seed: str,
    expected: Iterable[str],
    *,
    concurrency: int,
    workers: int,
    timeout: float,
) -> RunResult:
    """Run crawler `name` from `seed` and check it stored exactly the URLs in `expected`."""
    with tempfile.TemporaryDirectory(prefix=f"scraper-bench-{name}-") as tmp:
        db = str(Path(tmp) / "crawl.db")
        command = CRAWLERS[name](seed, db, concurrency, workers)
        usage = measure(command, Path(tmp), timeout)
        stored = read_results(db, set(expected), ours=name.startswith("ours"))
    return RunResult(name, usage, stored)


def measure(command: list[str], cwd: Path, timeout: float) -> Usage:
    """Run `command` in `cwd` under the rusage wrapper; sample its tree's memory until it ends."""
    report = cwd / "rusage.json"
    wrapper = [sys.executable, "-m", "bench.rusage", str(report), "--", *command]
    log = (cwd / "crawler.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        wrapper, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    sampler = _Sampler(process.pid)
    timed_out = False
    try:
        while process.poll() is None:
            sampler.sample()
            if time.monotonic() - started > timeout and not timed_out:
                timed_out = True
                process.send_signal(signal.SIGINT)  # the wrapper passes it on: a graceful stop
            time.sleep(SAMPLE_INTERVAL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
    wall = time.monotonic() - started
    if not report.is_file():
        tail = (cwd / "crawler.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{command[:4]} ended without a report:\n{tail}")
    rusage = json.loads(report.read_text())
    if rusage["returncode"] != 0 and not timed_out:
        tail = (cwd / "crawler.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{command[:4]} exited {rusage['returncode']}:\n{tail}")
    return Usage(
        wall_s=wall,
        cpu_s=rusage["user_s"] + rusage["sys_s"],
        main_peak_rss=sampler.main_peak,
        tree_peak_rss=sampler.tree_peak,
        returncode=rusage["returncode"],
        timed_out=timed_out,
        loop_thread_s=sampler.loop_thread_s,
        other_threads_s=sampler.other_threads_s,
        children_s=sum(sampler.children_cpu.values()),
    )


class _Sampler:
    """Peak memory of the wrapper's descendants: the crawler is its only direct child."""

    def __init__(self, wrapper_pid: int) -> None:
        self._wrapper = psutil.Process(wrapper_pid)
        self._main: psutil.Process | None = None
        self.main_peak = 0
        self.tree_peak = 0
        self.loop_thread_s = 0.0
        self.other_threads_s = 0.0
        self.children_cpu: dict[int, float] = {}  # pid → CPU seconds, as last seen

    def sample(self) -> None:
        try:
            tree = self._wrapper.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        if self._main is None:
            direct = self._wrapper.children()
            self._main = direct[0] if direct else None
        total = 0
        for process in tree:
            try:
                total += process.memory_info().rss
            except psutil.Error:  # ended between the listing and the read
                continue
        self.tree_peak = max(self.tree_peak, total)
        if self._main is not None:
            self.main_peak = max(self.main_peak, _high_water_mark(self._main))
            self._sample_cpu(self._main, tree)
        # The main process's high-water mark also sees peaks between two samples.
        self.tree_peak = max(self.tree_peak, self.main_peak)

    def _sample_cpu(self, main: psutil.Process, tree: list[psutil.Process]) -> None:
        try:
            threads = main.threads()
        except psutil.Error:
            return
        loop = sum(t.user_time + t.system_time for t in threads if t.id == main.pid)
        others = sum(t.user_time + t.system_time for t in threads if t.id != main.pid)
        self.loop_thread_s, self.other_threads_s = loop, others
        for process in tree:
            if process.pid == main.pid:
                continue
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            self.children_cpu[process.pid] = times.user + times.system


def _high_water_mark(process: psutil.Process) -> int:
    """The process's peak RSS so far (VmHWM), or its current RSS where /proc has no such line."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return int(process.memory_info().rss)
    except (OSError, psutil.Error):
        return 0


def read_results(db: str, expected: set[str], *, ours: bool) -> Stored:
    """Our schema has `pages.error_kind` and a `crawls` row; the others' flat table `error`."""
    with sqlite3.connect(db) as conn:
        urls = [url for (url,) in conn.execute("SELECT url FROM pages")]
        error_column = "error_kind" if ours else "error"
        ((errors,),) = conn.execute(f"SELECT count({error_column}) FROM pages")
        first, last = conn.execute("SELECT min(fetched_at), max(fetched_at) FROM pages").fetchone()
        counters: dict[str, Any] = {}
        if ours:
            row = conn.execute("SELECT counters FROM crawls ORDER BY id DESC LIMIT 1").fetchone()
            counters = json.loads(row[0]) if row and row[0] else {}
    stored = set(urls)
    return Stored(
        rows=len(urls),
        distinct=len(stored),
        missing=len(expected - stored),
        unexpected=len(stored - expected),
        errors=errors,
        span_s=_seconds(last) - _seconds(first) if urls else 0.0,
        counters=counters,
    )


def _seconds(value: str | float) -> float:
    """Ours stores ISO 8601 times; the bare loop and Scrapy store Unix times."""
    return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else float(value)
