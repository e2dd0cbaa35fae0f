"""`python -m bench` (`make bench`): the cases, one table, the ratios.

Every crawler crawls the same site from the same server in the same run, one after the other, so
the ratios hold even on a machine shared with other work (the absolute figures do not). On a
noisy machine one crawl can still be 30% off, so the crawlers take turns (`--rounds`, 3 by
default): the table shows each one's median round, and the ratio to the bare loop is the median
of the round-by-round ratios.

The event-loop lag and the stages' load come from our crawl's `counters` JSON (table `crawls`);
the other crawlers have none, and show "n/a":

    "loop_lag_ms": {"p50": 0.4, "p99": 3.1, "max": 12.0, ...}    (scraper.crawl.health's as_json())
    "stages": {"fetch": {"load_pct": 62.0, "queue_mean": 3.1, "busy_s": 10.2, ...}, "parse": ...}

The table shows each stage's mean load (its share of capacity in use) and queue depth, e.g.
"parse 97% q12": the stage near 100% with a queue in front of it is the bottleneck.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import psutil

from scraper.config import auto_workers, usable_cpus
from scraper.demosite import SiteSpec

from .measure import CRAWLERS, MB, RunResult, run_crawler
from .server import lua_modules, nginx_binary, serve
from .shop import cached_shop
from .shop import paths as shop_paths
from .site import cached_site, default_cache

DEFAULT_CRAWLERS = ("ours", "ours-spider", "scrapy", "bare", "bare-inline")
# The ratios shown under each table: (crawler, against). A spider's targets (issue #21): its
# pages/s ≥ 4× Scrapy's, and its CPU per page ≤ 1.15× that of `ours` (the [extract] rules).
RATIOS = (
    ("ours", "scrapy"), ("ours", "bare"), ("ours", "bare-inline"),
    ("ours-spider", "scrapy"), ("ours-spider", "ours"), ("ours-shop", "scrapy-shop"),
    ("ours-warc", "ours"),  # what archiving every fetch (storage.warc) costs
)  # fmt: skip
CASES = ("cpu", "latency", "heavy", "shop", "broad")
DEFAULT_CASES = ("cpu", "latency", "heavy", "shop")  # broad (~4 min, ours only): --cases broad
# The shop case's crawlers, whatever --crawlers says: our spider and Scrapy's, the same logic.
SHOP_CRAWLERS = ("ours-shop", "scrapy-shop")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    spec: SiteSpec
    latency: float  # seconds the server adds to every response
    about: str
    shop: int = 0  # products: the shop site (bench/shop.py) instead of the demo site


def make_cases(pages: int, heavy_pages: int, latency: float) -> dict[str, Case]:
    site = SiteSpec(pages=pages, page_bytes=40_000, links_per_page=45, extras=False)
    heavy = SiteSpec(pages=heavy_pages, page_bytes=1_500_000, links_per_page=45, extras=False)
    return {
        "cpu": Case("cpu", site, 0.0, f"{pages} pages of ~40 KB, no added latency"),
        "latency": Case(
            "latency", site, latency, f"the same site, {latency * 1000:.0f} ms added per response"
        ),
        "heavy": Case("heavy", heavy, 0.0, f"{heavy_pages} pages of ~1.5 MB, no added latency"),
        "shop": Case(
            "shop", site, 0.0, f"a shop of {pages} products of ~40 KB listed in embedded JSON, "
            "crawled by a spider", shop=pages,
        ),
    }  # fmt: skip


Rounds = dict[str, list[RunResult]]  # each crawler's runs, in the order they ran


def run_case(case: Case, args: argparse.Namespace, out: TextIO) -> Rounds:
    """Every crawler crawls the case's site, taking turns `args.rounds` times, so round k of
    each ran seconds from round k of the others. Scrapy crawls once, after the rounds: it is
    ten times slower, so a round of it costs minutes and its noise cannot move a ratio. So
    does every crawler in the latency case: its figures are bound by the server's delay, not
    by the CPU, so a busy machine barely moves them."""
    if case.shop:
        root, paths = cached_shop(case.shop, args.site_cache), shop_paths(case.shop)
        crawlers, slow = SHOP_CRAWLERS, "scrapy-shop"
    else:
        root, _ = cached_site(case.spec, args.site_cache)
        paths, crawlers, slow = sorted(case.spec.reachable()), tuple(args.crawlers), "scrapy"
    rounds: Rounds = {}
    turns = 1 if case.latency else args.rounds
    scrapy = slow in crawlers and importlib.util.find_spec("scrapy") is not None
    runs = [
        *((turn, name) for turn in range(turns) for name in crawlers if name != slow),
        *([(0, slow)] if scrapy else []),
    ]
    with serve(root, case.latency, args.server) as server:
        expected = {server.url + path.lstrip("/") for path in paths}
        print(
            f"\n## {case.name}: {case.about}; {len(paths)} pages to store, "
            f"served by {server.kind}, "
            f"concurrency {args.concurrency}, parse workers {args.parse_workers}, "
            f"{turns} round(s)\n",
            file=out,
            flush=True,
        )
        for turn, name in runs:
            print(f"  {name} (round {turn + 1})…", file=sys.stderr, flush=True)
            result = run_crawler(
                name,
                server.url,
                expected,
                concurrency=args.concurrency,
                workers=args.parse_workers,
                timeout=args.timeout,
            )
            rounds.setdefault(name, []).append(result)
    if slow in crawlers and slow not in rounds:
        print("(scrapy: not installed; pip install -e '.[bench]')\n", file=out)
    print(format_table(rounds), file=out)
    print("\n" + format_ratios(case, rounds, args.concurrency), file=out, flush=True)
    return rounds


def median_run(runs: Sequence[RunResult]) -> RunResult:
    """The run with the median pages/s (the lower middle one of an even count)."""
    ranked = sorted(runs, key=lambda r: r.pages_per_s)
    return ranked[(len(ranked) - 1) // 2]


HEADER = (
    "crawler",
    "pages",
    "stored once",
    "wall s",
    "pages/s",
    "each round",
    "CPU s/1k pages",
    "main RSS MB",
    "tree RSS MB",
    "loop lag p50/p99 ms",
    "stages busy",
    "CPU s: main thread / other threads / children",
)


def format_table(rounds: Rounds) -> str:
    """One row per crawler: its median round, with every round's pages/s beside it."""
    rows = [HEADER, *(_row(median_run(runs), runs) for runs in rounds.values() if runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [_line(row, widths) for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _line(row: Sequence[str], widths: Sequence[int]) -> str:
    return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"


def _row(r: RunResult, runs: Sequence[RunResult]) -> tuple[str, ...]:
    u = r.usage
    checks = [_stored_check(run) for run in runs]
    failed = [check for check in checks if check != "yes"]
    return (
        r.crawler,
        str(r.pages),
        failed[0] if failed else "yes",
        f"{u.wall_s:.1f}",
        f"{r.pages_per_s:.0f}",
        " ".join(f"{run.pages_per_s:.0f}" for run in runs),
        f"{r.cpu_per_1000:.2f}",
        f"{u.main_peak_rss / MB:.0f}",
        f"{u.tree_peak_rss / MB:.0f}",
        _lag(r.stored.counters.get("loop_lag_ms")),
        _stages(r.stored.counters.get("stages")),
        f"{u.loop_thread_s:.1f} / {u.other_threads_s:.1f} / {u.children_s:.1f}",
    )


def _stored_check(r: RunResult) -> str:
    s, u = r.stored, r.usage
    check = "yes" if s.once_each else f"NO: {s.missing} missing, {s.rows - s.distinct} twice"
    if s.errors:
        check += f", {s.errors} errors"
    if u.timed_out:
        check += ", timed out"
    return check


def _lag(lag: Any) -> str:
    if not isinstance(lag, dict) or "p50" not in lag:
        return "n/a"
    return f"{lag['p50']:.1f} / {lag['p99']:.1f}"


def _stages(stages: Any) -> str:
    if not isinstance(stages, dict) or not stages:
        return "n/a"
    parts = []
    for name, value in stages.items():
        if isinstance(value, dict) and isinstance(value.get("load_pct"), int | float):
            parts.append(f"{name} {value['load_pct']:.0f}% q{value.get('queue_mean', 0):.0f}")
            continue
        busy = value.get("busy_s") if isinstance(value, dict) else value
        parts.append(f"{name} {busy:.1f}s" if isinstance(busy, int | float) else f"{name} {busy}")
    return ", ".join(parts)


def format_ratios(case: Case, rounds: Rounds, concurrency: int) -> str:
    """Ours (and ours with a spider) ÷ each other crawler (`RATIOS`). With several rounds of
    both, round k of ours is set against round k of the other (they ran seconds apart, in the
    same mood of the machine) and the median of those ratios is given, each round's in
    brackets."""
    lines = []
    for ours, other in RATIOS:
        mine = rounds.get(ours, [])
        theirs = rounds.get(other, [])
        if not mine or not theirs:
            continue
        pairs = list(zip(mine, theirs, strict=False)) if len(theirs) > 1 else []
        pairs = pairs or [(median_run(mine), median_run(theirs))]
        speed = [a.pages_per_s / b.pages_per_s for a, b in pairs if b.pages_per_s]
        cpu = [a.cpu_per_1000 / b.cpu_per_1000 for a, b in pairs if b.cpu_per_1000]
        if speed and cpu:
            each = f" (rounds: {', '.join(f'{x:.2f}' for x in speed)})" if len(speed) > 1 else ""
            lines.append(
                f"{ours} ÷ {other}: pages/s {statistics.median(speed):.2f}×{each}, "
                f"CPU per page {statistics.median(cpu):.2f}×"
            )
    if case.latency:
        ceiling = concurrency / case.latency
        lines.append(
            f"Little's-law ceiling: {concurrency} ÷ {case.latency} s = {ceiling:.0f} pages/s"
        )
        for name, runs in rounds.items():
            lines.append(f"  {name}: {median_run(runs).pages_per_s / ceiling:.0%} of the ceiling")
    return "\n".join(lines)


def describe_machine() -> str:
    """One paragraph: what the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = ", ".join(
        f"{name} {_version(name)}" for name in ("aiohttp", "selectolax", "scrapy", "twisted")
    )
    nginx = nginx_binary()
    nginx_version = "not installed"
    if nginx:
        probe = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
        nginx_version = probe.stderr.strip().removeprefix("nginx version: ")
        nginx_version += " + Lua module" if lua_modules() else " (no Lua module)"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {psutil.cpu_count()} logical CPUs, {memory:.0f} GiB; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"{versions}; {nginx_version}; load average at start {load}"
    )


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Crawl a generated local site with our crawler, Scrapy and a bare aiohttp "
        "loop, side by side, and print one table per case.",
    )
    parser.add_argument("--pages", type=int, default=10_000, help="pages of the cpu/latency site")
    parser.add_argument("--heavy-pages", type=int, default=300, help="pages of ~1.5 MB")
    parser.add_argument("--cases", default=",".join(DEFAULT_CASES), help=f"of {', '.join(CASES)}")
    parser.add_argument(
        "--broad-hosts", default="500,5000", help="broad case: sites, one run each (comma list)"
    )
    parser.add_argument(
        "--crawlers", default=",".join(DEFAULT_CRAWLERS), help=f"of {', '.join(CRAWLERS)}"
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=3,
        help="times each crawler crawls the cpu and heavy cases, taking turns; the table shows "
        "the median (Scrapy, and the latency case, once)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--parse-workers",
        type=int,
        default=auto_workers(usable_cpus()),
        help='parser processes for ours and the bare loop (default: what parse.workers = "auto" '
        "gives here; 0: parse inline)",
    )
    parser.add_argument("--latency", type=float, default=0.2, help="seconds, latency case")
    parser.add_argument("--server", choices=["nginx", "aiohttp"], default="nginx")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per crawl at most")
    parser.add_argument("--site-cache", type=Path, default=default_cache())
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.cases = _choices(parser, "--cases", args.cases, CASES)
    args.crawlers = _choices(parser, "--crawlers", args.crawlers, tuple(CRAWLERS))
    return args


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def _choices(
    parser: argparse.ArgumentParser, flag: str, value: str, valid: Sequence[str]
) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    if bad := [v for v in chosen if v not in valid]:
        parser.error(f"{flag}: unknown {', '.join(bad)} (choose from {', '.join(valid)})")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = sys.stdout
    if args.server == "nginx" and nginx_binary() is None:
        print("bench: nginx not found; serving with aiohttp instead", file=sys.stderr)
    print(f"# make bench\n\nMachine: {describe_machine()}", file=out)
    print(f"Command: python -m bench {' '.join(argv)}", file=out)
    cases = make_cases(args.pages, args.heavy_pages, args.latency)
    started = time.monotonic()
    report: dict[str, Any] = {}
    for name in args.cases:
        if name == "broad":
            from .broad import main as broad

            print("\n## broad: thousands of small sites, each treated politely\n", file=out)
            out.flush()
            broad(["run", "--hosts", args.broad_hosts, "--timeout", str(args.timeout)])
            continue
        rounds = run_case(cases[name], args, out)
        report[name] = [
            {
                "crawler": r.crawler,
                "round": turn + 1,
                "usage": asdict(r.usage),
                "stored": asdict(r.stored),
            }
            for runs in rounds.values()
            for turn, r in enumerate(runs)
        ]
    print(f"\n(benchmark took {time.monotonic() - started:.0f} s)", file=out)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0
