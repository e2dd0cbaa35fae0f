"""The command line: a thin edge that reads config, runs a command and maps errors to exit codes.

Exit codes: 0 the command ran (fetch errors are data in the database), 2 usage, config or other
user errors (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import logging.handlers
import os
import queue
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, load_config
from .crawler import Crawler
from .crawls import CrawlSummary, list_crawls
from .demosite import SiteSpec, serve
from .errors import ScraperError
from .query import FORMATS, open_readonly, run_query, write_table

log = logging.getLogger("scraper")

DEFAULT_CONFIG = Path("config.toml")
DEMO_DB = "data/demo.db"
DEMO_QUERY = (
    "SELECT url, status, title, json_extract(fields, '$.price') AS price "
    "FROM pages WHERE title IS NOT NULL ORDER BY depth, url LIMIT 8"
)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own options, parsed by scraper.bench (the parser lists it)
        return _bench_command(argv[1:])
    args = _parser().parse_args(argv)
    with _logging(args.log_level):
        try:
            return int(args.command(args))
        except ScraperError as exc:
            if args.debug:
                log.exception("user error")
            print(f"scraper: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("scraper: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="config file (default: ./config.toml if any)")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (a TOML value); repeatable",
    )
    common.add_argument("--db", help="results database (storage.db)")
    common.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks for user errors")

    parser = argparse.ArgumentParser(
        prog="scraper", description="An async web crawler that stores what it finds in SQLite."
    )
    parser.add_argument("--version", action="version", version=f"scraper {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    crawl = commands.add_parser(
        "crawl",
        parents=[common],
        help="crawl the seeds into the database",
        description="Crawl from the seeds (or crawl.seeds) into SQLite.",
    )
    crawl.add_argument("seeds", nargs="*", metavar="SEED", help="start URLs (replace crawl.seeds)")
    crawl.add_argument("--concurrency", type=int, help="fetch.concurrency")
    crawl.add_argument("--max-pages", type=int, help="crawl.max_pages")
    crawl.add_argument(
        "--fresh", action="store_true", help="start a new crawl even if the last one did not finish"
    )
    crawl.set_defaults(command=_crawl_command)

    crawls = commands.add_parser(
        "crawls",
        parents=[common],
        help="list the crawls in the database",
        description="List the crawls in the database with their state and counters.",
    )
    crawls.set_defaults(command=_crawls_command)

    query = commands.add_parser(
        "query",
        parents=[common],
        help="run read-only SQL on the results",
        description="Run one read-only SQL statement on the results.",
    )
    query.add_argument("sql", help='e.g. "SELECT url, status, title FROM pages LIMIT 10"')
    query.add_argument("--format", choices=FORMATS, default="table")
    query.set_defaults(command=_query_command)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="serve the demo site, crawl it, show the results",
        description="Serve the built-in demo site on 127.0.0.1, crawl it into data/demo.db, "
        "print the summary and an example query, and stop the site.",
    )
    demo.add_argument("--pages", type=int, default=300, help="pages in the demo site")
    demo.set_defaults(command=_demo_command)

    site = commands.add_parser(
        "demo-site",
        parents=[common],
        help="serve the demo site only",
        description="Serve the demo site until Ctrl-C (to try crawls on).",
    )
    site.add_argument("--pages", type=int, default=300)
    site.add_argument("--port", type=int, default=8080)
    site.add_argument("--latency", type=float, default=0.0, help="seconds added per response")
    site.set_defaults(command=_demo_site_command)

    commands.add_parser(
        "bench",
        add_help=False,
        help="benchmark against Scrapy and a bare aiohttp loop (scraper bench --help)",
    )
    return parser


def _load(args: argparse.Namespace, values: dict[str, Any], *, use_file: bool = True) -> Config:
    path = args.config
    if path is None and use_file and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if args.db:
        values["storage.db"] = args.db
    return load_config(path, overrides=args.overrides, values=values)


def _crawl_command(args: argparse.Namespace) -> int:
    values: dict[str, Any] = {}
    if args.seeds:
        values["crawl.seeds"] = list(args.seeds)
    if args.concurrency is not None:
        values["fetch.concurrency"] = args.concurrency
    if args.max_pages is not None:
        values["crawl.max_pages"] = args.max_pages
    config = _load(args, values)
    summary = asyncio.run(_crawl(config, fresh=args.fresh))
    print(format_summary(summary))
    return EXIT_INTERRUPTED if summary.status == "interrupted" else 0


async def _crawl(config: Config, *, fresh: bool = False) -> CrawlSummary:
    crawler = Crawler(config, fresh=fresh, announce=_say)
    with _stop_on_signals(crawler):
        return await crawler.run()


def _say(message: str) -> None:
    print(f"scraper: {message}", file=sys.stderr, flush=True)


def _crawls_command(args: argparse.Namespace) -> int:
    config = _load(args, {})
    with open_readonly(config.storage.db) as conn:
        columns, rows = list_crawls(conn)
    write_table(columns, rows, sys.stdout)
    return 0


@contextlib.contextmanager
def _stop_on_signals(crawler: Crawler) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop gracefully (store what was parsed). Second: quit at once;
    SQLite's transactions keep the database consistent either way."""
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(signum: int) -> None:
        nonlocal stopping
        if stopping:
            os._exit(EXIT_INTERRUPTED)
        stopping = True
        print(
            f"scraper: {signal.Signals(signum).name}: stopping; again to quit at once",
            file=sys.stderr,
        )
        crawler.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        yield
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _query_command(args: argparse.Namespace) -> int:
    config = _load(args, {})
    run_query(config.storage.db, args.sql, sys.stdout, args.format)
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    spec = SiteSpec(pages=args.pages)
    db = Path(args.db or DEMO_DB)
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)  # the demo's own file, rebuilt on every run
    summary = asyncio.run(_demo(args, spec, str(db)))
    print(format_summary(summary))
    print(f'\nExample query:  scraper query --db {db} "{DEMO_QUERY}"\n')
    run_query(db, DEMO_QUERY, sys.stdout)
    return EXIT_INTERRUPTED if summary.status == "interrupted" else 0


async def _demo(args: argparse.Namespace, spec: SiteSpec, db: str) -> CrawlSummary:
    runner = await serve(spec)
    try:
        port = runner.addresses[0][1]
        values = {
            "crawl.seeds": [f"http://127.0.0.1:{port}/"],
            "storage.db": db,
            "extract.price": "p.price",
            "extract.headings": {"css": "h1", "all": True},
        }
        config = _load(args, values, use_file=False)
        print(f"Demo site: {spec.pages} pages at http://127.0.0.1:{port}/ — crawling…")
        return await _crawl(config, fresh=True)
    finally:
        await runner.cleanup()


def _demo_site_command(args: argparse.Namespace) -> int:
    async def serve_forever() -> None:
        runner = await serve(SiteSpec(pages=args.pages, latency=args.latency), port=args.port)
        print(
            f"Demo site: http://127.0.0.1:{args.port}/ ({args.pages} pages); Ctrl-C to stop",
            flush=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever())
    return 0


def _bench_command(argv: list[str]) -> int:
    try:
        from .bench.harness import main as bench
    except ModuleNotFoundError as exc:  # psutil: the `bench` extra is not installed
        print(
            f"scraper: error: bench needs the bench extra ({exc.name} is missing): "
            "pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        return bench(argv)
    except KeyboardInterrupt:
        print("scraper: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def format_summary(s: CrawlSummary) -> str:
    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    return "\n".join(
        [
            f"Crawl {s.crawl_id} {s.status}: {s.pages} pages in {s.duration_s:.1f} s "
            f"({s.pages_per_second:.1f} pages/s), {s.bytes / 1e6:.1f} MB",
            f"  by status: {counts(s.by_status)}",
            f"  errors:    {counts(s.by_error)}",
            f'  results:   {s.db}  (scraper query --db {s.db} "SELECT url, status, title FROM '
            'pages LIMIT 10")',
        ]
    )


@contextlib.contextmanager
def _logging(level: str) -> Iterator[None]:
    """Log through a queue so the event-loop thread never waits on a write to stderr."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    listener = logging.handlers.QueueListener(records, handler)
    root = logging.getLogger()
    queue_handler = logging.handlers.QueueHandler(records)
    root.addHandler(queue_handler)
    root.setLevel(level)
    listener.start()
    try:
        yield
    finally:
        listener.stop()
        root.removeHandler(queue_handler)
