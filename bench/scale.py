"""`make bench-scale`: one crawl on several processes, on PostgreSQL, against SQLite's one.

    python -m bench.scale [--hosts 24] [--pages 150] [--latency 0.2] [--workers 1,2,4]
                                  [--concurrency 16] [--cpu-pages 3000] [--json FILE]
                                  [--no-sqlite] [--timeline]

latency case: a site of `--hosts` hosts (127.0.0.2, .3, ...; one aiohttp server listening on
each, this process), each the demo site of `--pages` pages answering after `--latency` seconds,
with a per-host concurrency and delay. Crawled once by SQLite (one process) and once by
PostgreSQL with each number of `--workers` (`scraper crawl --workers N`), each process at
`--concurrency`. cpu case: the benchmark's cpu site (nginx when installed), one host, no added
latency: SQLite against one PostgreSQL process.

Per run: pages/s (over the span of the stored fetches), its ratio to one PostgreSQL worker, CPU
per 1,000 pages (every process of the run: crawlers, parse workers; not PostgreSQL's own), the
machine's CPU use, politeness violations in this server's log (requests arriving at a host with
its limit already in flight; starts at a host where a run of k + 1 spans less than k delays, less
an arrival jitter: see tests/crawl/test_workers.py), URLs requested twice, duplicate rows, lost
URLs, each kind of PostgreSQL transaction's p99 (the worst worker's, from their logs) and the
deadlocks `pg_stat_database` counted. PostgreSQL runs with its defaults (fsync on).
`--timeline`: after each PostgreSQL latency run, each worker's requests, hosts held and requests
in flight, second by second (timeline.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import web

from bench.timeline import Sample, build, sample_leases
from scraper.demosite import SiteSpec, make_app
from scraper.store import open_results
from tests.pgserver import PgServer

# Per host: 4 requests in flight at most (20 pages/s at 200 ms), and 20 ms between starts (which
# the concurrency binds first, at this latency, but which is checked all the same): the crawl
# is bound by the workers, not by politeness, as a scaling benchmark must be.
PER_HOST = 4
DELAY = 0.02
# Arrivals here are late by up to a few tens of ms on a busy 2-core machine (see
# tests/crawl/test_workers.py): a run of k + 1 starts at a host is a violation when it spans
# less than k delays less this.
ARRIVAL_JITTER = 0.05


@dataclass
class Run:
    case: str
    backend: str
    workers: int
    wall_s: float
    cpu_s: float
    pages: int
    expected: int
    pages_per_s: float
    lost: int
    duplicate_rows: int
    fetched_twice: int
    too_many_in_flight: int
    too_close: int
    deadlocks: int | None
    server_cpu_s: float = 0.0  # PostgreSQL's own CPU during the run
    timings_p99_ms: dict[str, float] = field(default_factory=dict)
    returncode: int = 0

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s / self.pages * 1000 if self.pages else 0.0

    @property
    def server_cpu_per_1000(self) -> float:
        return self.server_cpu_s / self.pages * 1000 if self.pages else 0.0

    @property
    def machine_cpu_pct(self) -> float:
        """The crawl's processes and PostgreSQL's, over the machine's CPUs while it ran."""
        used = self.cpu_s + self.server_cpu_s
        return 100 * used / self.wall_s / (os.cpu_count() or 1) if self.wall_s else 0.0


class MultiHostSite:
    """The demo site on several loopback addresses, with a log of every request."""

    def __init__(self, spec: SiteSpec, hosts: int) -> None:
        self.spec = spec
        self.addresses = [f"127.0.0.{n}" for n in range(2, 2 + hosts)]
        self.log: list[tuple[str, str, float, float]] = []
        self.roots: list[str] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = make_app(self.spec)

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            arrived = time.monotonic()
            try:
                return await handler(request)  # type: ignore[no-any-return]
            finally:
                self.log.append((request.host, request.path_qs, arrived, time.monotonic()))

        # Outermost, so a request's span includes the site's latency (the delay is a middleware
        # of the app too): appended, it logged spans of ~0 ms, and "over limit" could not see a
        # request still in flight.
        app.middlewares.insert(0, record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.addresses[0], 0).start()
        port = self._runner.addresses[0][1]
        for address in self.addresses[1:]:
            await web.TCPSite(self._runner, address, port).start()
        self.roots = [f"http://{address}:{port}/" for address in self.addresses]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def expected(self) -> set[str]:
        paths = self.spec.reachable()
        return {root + path.lstrip("/") for root in self.roots for path in paths}


def politeness(log: list[tuple[str, str, float, float]], delay: float) -> tuple[int, int, int]:
    """(requests over the per-host limit when they arrived, starts too close, URLs requested
    more than once) in a server's log."""
    by_host: dict[str, list[tuple[float, float]]] = {}
    seen: dict[tuple[str, str], int] = {}
    for host, path, arrived, left in log:
        if path == "/robots.txt":
            continue
        by_host.setdefault(host, []).append((arrived, left))
        seen[host, path] = seen.get((host, path), 0) + 1
    over = close = 0
    for spans in by_host.values():
        starts = sorted(a for a, _ in spans)
        for i in range(len(starts)):  # the first start of each run too fast counts once
            close += any(
                starts[i + k] - starts[i] < k * delay - ARRIVAL_JITTER
                for k in range(1, len(starts) - i)
            )
        events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
        in_flight = 0
        for _, step in events:
            in_flight += step
            over += in_flight > PER_HOST
    twice = sum(1 for n in seen.values() if n > 1)
    return over, close, twice


def crawl_options(concurrency: int, parse_workers: int, *, latency_case: bool) -> list[str]:
    options = [
        "--concurrency", str(concurrency), "-q",
        "--set", f"parse.workers={parse_workers}", "--set", "crawl.sitemaps=false",
        "--log-level", "INFO", "--log-format", "json",
    ]  # fmt: skip
    if latency_case:
        options += ["--set", f"fetch.per_host_concurrency={PER_HOST}"]
        options += ["--set", f"fetch.per_host_delay={DELAY}"]
    else:  # one host: its slots sized like the global cap, as `python -m bench` does
        options += ["--set", f"fetch.per_host_concurrency={concurrency}"]
    return options


async def run_crawl(
    case: str, db: str, seeds: list[str], workers: int, options: list[str], folder: Path
) -> tuple[float, float, int, dict[str, float]]:
    """(wall s, CPU s of the run's processes, exit code, worst p99 per transaction kind)."""
    log_file = folder / f"{case}-{workers}.log"
    command = [sys.executable, "-m", "scraper", "crawl", *seeds, "--db", db, *options]
    command += ["--log-file", str(log_file)]
    if workers > 1:
        command += ["--workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await process.communicate()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if process.returncode:
        print(err.decode()[-2000:], file=sys.stderr)
    return wall, cpu, process.returncode or 0, _worst_p99(log_file)


def _worst_p99(log_file: Path) -> dict[str, float]:
    worst: dict[str, float] = {}
    if not log_file.exists():
        return worst
    for line in log_file.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = str(entry.get("message", ""))
        if message.startswith("postgresql timings "):
            for label, figures in json.loads(message.split(" ", 2)[2]).items():
                worst[label] = max(worst.get(label, 0.0), float(figures["p99_ms"]))
    return worst


def stored(db: str, expected: set[str]) -> tuple[int, int, float, int]:
    """(rows, duplicate rows, pages/s over the fetch span, expected URLs not stored)."""
    with open_results(db) as reader:
        crawl = reader.find_crawl()
        pages = reader.pages(crawl.id)
        urls = [row[pages.columns.index("url")] for row in pages.rows]
        span = reader.fetch_span(crawl.id) or 0.0
    rate = (len(urls) - 1) / span if span > 0 else 0.0
    return len(urls), len(urls) - len(set(urls)), rate, len(expected - set(urls))


def deadlocks(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


async def latency_case(args: argparse.Namespace, server: PgServer, folder: Path) -> list[Run]:
    spec = SiteSpec(
        pages=args.pages, page_bytes=8000, links_per_page=20, extras=False,
        latency=args.latency, seed=3,
    )  # fmt: skip
    site = MultiHostSite(spec, args.hosts)
    await site.start()
    runs = []
    try:
        plan = [("sqlite", 1)] if args.sqlite else []
        plan += [("postgresql", n) for n in args.workers]
        for n, (backend, workers) in enumerate(plan):
            site.log.clear()
            if backend == "sqlite":
                db = str(folder / f"latency-{n}.db")
            else:
                db = await asyncio.to_thread(server.address.create_database, f"latency_{n}")
            options = crawl_options(args.concurrency, 1, latency_case=True)
            server_before = server.cpu_seconds()
            samples: list[Sample] = []
            async with asyncio.TaskGroup() as tasks:
                if args.timeline and backend != "sqlite":
                    sampler = tasks.create_task(sample_leases(db, samples))
                wall, cpu, code, p99 = await run_crawl(
                    "latency", db, site.roots, workers, options, folder
                )
                if args.timeline and backend != "sqlite":
                    sampler.cancel()
            server_cpu = server.cpu_seconds() - server_before if backend != "sqlite" else 0.0
            expected = site.expected()
            rows, dups, rate, lost = await asyncio.to_thread(stored, db, expected)
            over, close, twice = politeness(site.log, DELAY)
            locks = await asyncio.to_thread(deadlocks, db) if backend != "sqlite" else None
            runs.append(
                Run("latency", backend, workers, wall, cpu, rows, len(expected), rate, lost,
                    dups, twice, over, close, locks, server_cpu, p99, code)
            )  # fmt: skip
            print(_line(runs[-1], runs), flush=True)
            if samples:
                print(build(samples, site.log).table(), flush=True)
    finally:
        await site.stop()
    return runs


async def cpu_case(args: argparse.Namespace, server: PgServer, folder: Path) -> list[Run]:
    from bench.server import serve
    from bench.site import cached_site, default_cache

    spec = SiteSpec(pages=args.cpu_pages, page_bytes=40_000, links_per_page=45, extras=False)
    root, _ = await asyncio.to_thread(cached_site, spec, default_cache())
    runs = []
    with serve(root) as site:
        expected = {site.url + path.lstrip("/") for path in spec.reachable()}
        for n, backend in enumerate(["sqlite", "postgresql", "sqlite", "postgresql"]):
            if backend == "sqlite":
                db = str(folder / f"cpu-{n}.db")
            else:
                db = await asyncio.to_thread(server.address.create_database, f"cpu_{n}")
            options = crawl_options(64, 2, latency_case=False)
            server_before = server.cpu_seconds()
            wall, cpu, code, p99 = await run_crawl("cpu", db, [site.url], 1, options, folder)
            server_cpu = server.cpu_seconds() - server_before if backend != "sqlite" else 0.0
            rows, dups, rate, lost = await asyncio.to_thread(stored, db, expected)
            locks = await asyncio.to_thread(deadlocks, db) if backend != "sqlite" else None
            runs.append(
                Run("cpu", backend, 1, wall, cpu, rows, len(expected), rate, lost, dups, 0, 0,
                    0, locks, server_cpu, p99, code)
            )  # fmt: skip
            print(_line(runs[-1], runs), flush=True)
    return runs


HEADER = (
    "case     backend     workers  pages/s  ×1 worker  CPU s/1k  +server  machine CPU  lost  "
    "dup rows  twice  over limit  too close  deadlocks  p99 ms (sink, lease, claim, renew, release)"
)


def _line(run: Run, runs: list[Run]) -> str:
    one = next(
        (r for r in runs if r.case == run.case and r.backend == "postgresql" and r.workers == 1),
        None,
    )
    ratio = f"{run.pages_per_s / one.pages_per_s:.2f}×" if one and one.pages_per_s else "-"
    p99 = ", ".join(
        f"{run.timings_p99_ms.get(k, 0):.1f}"
        for k in ("sink", "lease", "claim", "renew", "release")
    )
    return (
        f"{run.case:8} {run.backend:11} {run.workers:7}  {run.pages_per_s:7.1f}  {ratio:>9}  "
        f"{run.cpu_per_1000:8.2f}  {run.server_cpu_per_1000:7.2f}  "
        f"{run.machine_cpu_pct:10.0f}%  {run.lost:4}  "
        f"{run.duplicate_rows:8}  {run.fetched_twice:5}  {run.too_many_in_flight:10}  "
        f"{run.too_close:9}  {'-' if run.deadlocks is None else run.deadlocks:>9}  "
        f"{p99 if run.backend == 'postgresql' else '-'}"
        + (f"  (exit {run.returncode})" if run.returncode else "")
    )


async def main_async(args: argparse.Namespace) -> list[Run]:
    print(HEADER, flush=True)
    with PgServer(durable=True) as server, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs = await latency_case(args, server, folder)
        if args.cpu_pages:
            runs += await cpu_case(args, server, folder)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=40)
    parser.add_argument("--pages", type=int, default=200, help="pages per host")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=16, help="per process")
    parser.add_argument("--cpu-pages", type=int, default=3000, help="0: no cpu case")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    parser.add_argument(
        "--no-sqlite", dest="sqlite", action="store_false", help="latency case: PostgreSQL only"
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="after each PostgreSQL latency run, each worker's requests, hosts and requests in "
        "flight, second by second",
    )
    args = parser.parse_args(argv)
    args.workers = [int(n) for n in args.workers.split(",")]
    runs = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
