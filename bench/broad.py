"""The `broad` case of `python -m bench`: thousands of small sites, each to be treated politely.

Each site listens on an address of its own, 127.1.x.y (Linux routes all of 127.0.0.0/8 to the
loopback; /etc/hosts is not touched), all served by one aiohttp process (`serve`) that delays
every response by `latency` and logs each request: its host, path, start and end. Each site has
a robots.txt, a home page linking to `pages - 1` pages, and no sitemap (the probe gets a 404).
The crawler is ours, with `fetch.per_host_concurrency = 1` and a per-host delay, every site a
seed from a file, under an open-files limit of 1,024 (soft and hard: raising the soft one gains
nothing).

From the server's log: **violations** (two requests of one host in flight at once, or two starts
closer than the delay, robots.txt and the sitemap probe included; less `TOLERANCE`, the server's
own scheduling noise) and the **steady** requests per second (from the 10th to the 90th
percentile of the starts), against the ceiling min(concurrency / latency, hosts / delay). From
the database: every page stored once. From the process: its peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from aiohttp import web

from scraper.store.dialect import HOST_SQL_SQLITE as HOST_SQL

from .measure import MB, Usage, _seconds, measure

TOLERANCE = 0.010  # seconds: starts this much closer than the delay still count as kept
OPEN_FILES = 1024


def address(n: int) -> str:
    return f"127.1.{n // 250}.{n % 250 + 1}"


@dataclass(frozen=True, slots=True)
class BroadResult:
    hosts: int
    requests: int
    pages_expected: int
    pages_stored: int
    pages_distinct: int
    errors: int
    violations_overlap: int
    violations_delay: int
    client_violations: int  # pages of a host started closer than the delay, by our own clock
    steady_rps: float
    ceiling: float
    peak_rss_mb: float
    wall_s: float
    cpu_s: float


def serve(hosts: int, port: int, latency: float, pages: int, log: Path, ready: Path) -> None:
    """Serve the sites until SIGTERM; then write the request log (JSON lines)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # Ahead of other work on a shared machine (where allowed): its log is the measure, and a
    # request it is late to read looks like a start closer to the one before.
    with contextlib.suppress(OSError):
        os.nice(-10)
    # And no collection of its older objects mid-run: a full collection stalled it ~30 ms, which
    # its log showed as a burst of starts 970 ms after the one before on many hosts at once.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 1000, 1000)
    entries: list[tuple[str, str, float, float]] = []
    home = "".join(f'<a href="/p/{i}">page {i}</a>' for i in range(pages - 1))

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        try:
            await asyncio.sleep(latency)
            if request.path == "/robots.txt":
                return web.Response(text="User-agent: *\nAllow: /\n")
            if request.path == "/":
                return web.Response(text=f"<title>home</title>{home}", content_type="text/html")
            if request.path.startswith("/p/"):
                return web.Response(text="<title>a page</title>", content_type="text/html")
            return web.Response(status=404)
        finally:
            entries.append((request.host, request.path, started, time.monotonic()))

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for n in range(hosts):
            await web.TCPSite(runner, address(n), port, backlog=128).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await asyncio.to_thread(ready.write_text, "ready")
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())
    with log.open("w") as out:
        for entry in entries:
            out.write(json.dumps(entry) + "\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((address(0), 0))
        return int(s.getsockname()[1])


def violations(log: list[tuple[str, str, float, float]], delay: float) -> tuple[int, int]:
    """(requests that started while another of their host was in flight, starts closer than
    the delay to the one before on their host)."""
    overlap, close = 0, 0
    for _, _, _, is_overlap, is_close in gaps(log, delay):
        overlap += is_overlap
        close += is_close
    return overlap, close


def gaps(
    log: list[tuple[str, str, float, float]], delay: float
) -> list[tuple[str, str, float, bool, bool]]:
    """Each pair of successive requests of a host: (host, "path -> path", the gap between their
    starts, overlapping?, closer than the delay?)."""
    by_host: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for host, path, start, end in log:
        by_host[host].append((start, end, path))
    found = []
    for host, spans in by_host.items():
        spans.sort()
        for (start_a, end_a, path_a), (start_b, _, path_b) in itertools.pairwise(spans):
            gap = start_b - start_a
            found.append(
                (host, f"{path_a} -> {path_b}", gap, start_b < end_a, gap < delay - TOLERANCE)
            )
    return found


def steady_rate(starts: list[float]) -> float:
    starts = sorted(starts)
    if len(starts) < 10:
        return 0.0
    low, high = int(0.1 * len(starts)), int(0.9 * len(starts))
    return (high - low) / (starts[high] - starts[low])


def run_broad(
    hosts: int,
    *,
    pages: int,
    latency: float,
    delay: float,
    concurrency: int,
    timeout: float,
    keep: Path | None = None,
) -> BroadResult:
    with tempfile.TemporaryDirectory(prefix="scraper-bench-broad-") as tmp:
        folder = Path(tmp)
        port = free_port()
        log, ready = folder / "requests.jsonl", folder / "ready"
        server = subprocess.Popen(
            [sys.executable, "-m", "bench.broad", "serve", "--hosts", str(hosts),
             "--port", str(port), "--latency", str(latency), "--pages", str(pages),
             "--log", str(log), "--ready", str(ready)],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while not ready.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the broad benchmark's server did not start")
                time.sleep(0.1)
            seeds = folder / "seeds.txt"
            seeds.write_text("".join(f"http://{address(n)}:{port}/\n" for n in range(hosts)))
            db = folder / "crawl.db"
            crawl = [
                sys.executable, "-m", "scraper", "crawl", "--seeds-file", str(seeds),
                "--db", str(db), "-q", "--concurrency", str(concurrency),
                "--set", "fetch.per_host_concurrency=1",
                "--set", f"fetch.per_host_delay={delay}",
                # the sites are on loopback addresses, and a seeds file's hosts are not trusted
                "--set", "fetch.block_private=false",
            ]  # fmt: skip
            limited = ["sh", "-c", f'ulimit -n {OPEN_FILES} && exec "$@"', "sh", *crawl]
            usage = measure(limited, folder, timeout)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for path in (log, db):
                shutil.copy(path, keep / f"{hosts}-{path.name}")
        entries = [tuple(json.loads(line)) for line in log.read_text().splitlines()]
        return _result(hosts, pages, latency, delay, concurrency, entries, db, usage)


def _result(
    hosts: int,
    pages: int,
    latency: float,
    delay: float,
    concurrency: int,
    entries: list[tuple[str, str, float, float]],
    db: Path,
    usage: Usage,
) -> BroadResult:
    overlap, close = violations(entries, delay)
    worst = sorted(gaps(entries, delay), key=lambda item: item[2])[:5]
    if close or overlap:
        shown = "; ".join(f"{h} {paths} {gap * 1000:.0f} ms" for h, paths, gap, _, _ in worst)
        print(f"  the closest starts: {shown}", file=sys.stderr, flush=True)
    with sqlite3.connect(db) as conn:
        ((stored, distinct, errors),) = conn.execute(
            "SELECT count(*), count(DISTINCT url), count(error_kind) FROM pages"
        ).fetchall()
        # The attempt's start as the crawler recorded it (ms), for pages: the same pairs on our
        # side of the wire, free of the server's scheduling noise.
        fetched = conn.execute(f"SELECT {HOST_SQL}, fetched_at FROM pages").fetchall()
    ours = [(host, "", _seconds(at), _seconds(at)) for host, at in fetched]
    client_close = sum(
        1
        for _, _, gap, _, _ in gaps(ours, delay)
        if gap < delay - 0.001  # (ms resolution)
    )
    return BroadResult(
        hosts=hosts,
        requests=len(entries),
        pages_expected=hosts * pages,
        pages_stored=stored,
        pages_distinct=distinct,
        errors=errors,
        violations_overlap=overlap,
        violations_delay=close,
        client_violations=client_close,
        steady_rps=steady_rate([start for _, _, start, _ in entries]),
        ceiling=min(concurrency / latency, hosts / delay),
        peak_rss_mb=usage.main_peak_rss / MB,
        wall_s=usage.wall_s,
        cpu_s=usage.cpu_s,
    )


def format_results(results: list[BroadResult]) -> str:
    lines = [
        "| hosts | requests | pages stored (distinct / expected) | errors | violations "
        "(overlap, delay; by our clock) | steady req/s | ceiling | of ceiling | peak RSS MB "
        "| wall s | CPU s |",
        "|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.hosts:,} | {r.requests:,} | {r.pages_stored:,} ({r.pages_distinct:,} / "
            f"{r.pages_expected:,}) | {r.errors} | {r.violations_overlap}, {r.violations_delay}; "
            f"{r.client_violations} "
            f"| {r.steady_rps:.0f} | {r.ceiling:.0f} | {r.steady_rps / r.ceiling:.0%} "
            f"| {r.peak_rss_mb:.0f} | {r.wall_s:.0f} | {r.cpu_s:.0f} |"
        )
    if len(results) > 1:
        ratio = results[-1].peak_rss_mb / results[0].peak_rss_mb
        lines.append(
            f"\npeak RSS, {results[-1].hosts:,} hosts ÷ {results[0].hosts:,}: {ratio:.2f}×"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench --cases broad")
    sub = parser.add_subparsers(dest="what")
    server = sub.add_parser("serve")
    server.add_argument("--hosts", type=int, required=True)
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--latency", type=float, required=True)
    server.add_argument("--pages", type=int, required=True)
    server.add_argument("--log", type=Path, required=True)
    server.add_argument("--ready", type=Path, required=True)
    run = sub.add_parser("run")
    run.add_argument("--hosts", default="500,5000")
    run.add_argument("--pages", type=int, default=5)
    run.add_argument("--latency", type=float, default=0.5)
    run.add_argument("--delay", type=float, default=1.0)
    run.add_argument("--concurrency", type=int, default=128)
    run.add_argument("--timeout", type=float, default=900)
    run.add_argument("--json", type=Path)
    run.add_argument("--keep", type=Path, help="copy each run's request log and database here")
    args = parser.parse_args(argv)
    if args.what == "serve":
        serve(args.hosts, args.port, args.latency, args.pages, args.log, args.ready)
        return 0
    if args.what != "run":
        parser.error("serve or run")
    results = []
    for hosts in (int(h) for h in args.hosts.split(",")):
        print(f"  broad: {hosts} hosts…", file=sys.stderr, flush=True)
        results.append(
            run_broad(
                hosts,
                pages=args.pages,
                latency=args.latency,
                delay=args.delay,
                concurrency=args.concurrency,
                timeout=args.timeout,
                keep=args.keep,
            )
        )
    print(
        f"broad: {args.pages} pages a site (+ robots.txt and a sitemap probe), latency "
        f"{args.latency} s, per-host delay {args.delay} s, per-host concurrency 1, concurrency "
        f"{args.concurrency}, open files {OPEN_FILES}\n"
    )
    print(format_results(results), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
