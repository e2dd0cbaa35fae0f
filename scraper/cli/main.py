"""The command line: a thin edge that reads config, runs a command and maps errors to exit codes.

Exit codes: 0 the command ran (fetch errors are data in the database), 2 usage, config or other
user errors (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scraper import __version__
from scraper.cli.logs import FORMATS as LOG_FORMATS
from scraper.cli.logs import LEVELS, setup_logging
from scraper.cli.output import output_file
from scraper.config import Config, load_config
from scraper.errors import ConfigError, ScraperError
from scraper.results.export import FORMATS as EXPORT_FORMATS
from scraper.results.export import export
from scraper.results.presets import PRESETS
from scraper.results.query import FORMATS, run_query, write_table
from scraper.results.stats import crawl_stats, format_stats
from scraper.store import open_results

# The crawl's stack (aiohttp, rich) and the report's (plotly, jinja2) are imported by the commands
# that use them: `scraper query` and friends start in a fraction of the time.
if TYPE_CHECKING:
    from scraper.crawl.crawler import Crawler
    from scraper.demosite import SiteSpec
    from scraper.store.base import CrawlSummary

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
    try:
        with setup_logging(args.log_level, args.log_file, args.log_format):
            return int(args.command(args))
    except ScraperError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"scraper: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("scraper: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`scraper export | head`): not an error. Point stdout at devnull
        # so the interpreter's final flush does not complain about the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


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
    common.add_argument("--log-level", default="WARNING", type=str.upper, choices=LEVELS)
    common.add_argument("--log-file", type=Path, help="also append the log to this file")
    common.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="json: one object per line"
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
    crawl.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    crawl.add_argument(
        "--fresh", action="store_true", help="start a new crawl even if the last one did not finish"
    )
    crawl.add_argument(
        "--debug-loop",
        action="store_true",
        help="asyncio debug mode: log callbacks that hold the loop over 100 ms, and where "
        "un-awaited coroutines were made (slower; to find what stalls the loop)",
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
        description="Run one read-only SQL statement, or a named one, on the results.",
        epilog="presets:\n"
        + "\n".join(f"  {p.name:<16}{p.about}" for p in PRESETS.values())
        + "\n(the README shows their SQL)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    query.add_argument(
        "sql", nargs="?", help='e.g. "SELECT url, status, title FROM pages LIMIT 10"'
    )
    query.add_argument("--preset", choices=PRESETS, help="a named query instead of SQL")
    query.add_argument("--format", choices=FORMATS, default="table")
    query.set_defaults(command=_query_command)

    exporter = commands.add_parser(
        "export",
        parents=[common],
        help="write the pages and their fields as JSON lines or CSV",
        description="Write every page with its extracted fields, streamed: JSON lines keep "
        "fields as an object, CSV gives each field a column (fields.NAME).",
    )
    exporter.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl")
    exporter.add_argument("--out", type=Path, metavar="FILE", help="default: standard output")
    exporter.add_argument("--crawl", type=int, metavar="ID", help="only this crawl's pages")
    exporter.set_defaults(command=_export_command)

    report = commands.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report of a crawl",
        description="Write one HTML file (charts and error tables; opens offline) about a crawl.",
    )
    report.add_argument(
        "--out", type=Path, metavar="FILE", help="default: beside the database, NAME-report.html"
    )
    report.add_argument("--crawl", type=int, metavar="ID", help="which crawl (default: the latest)")
    report.set_defaults(command=_report_command)

    stats = commands.add_parser(
        "stats",
        parents=[common],
        help="the summary of a crawl (finished or running)",
        description="Print a crawl's summary: pages by status, errors by kind, top hosts, "
        "latency percentiles, speed. Works while the crawl runs.",
    )
    stats.add_argument("--crawl", type=int, metavar="ID", help="which crawl (default: the latest)")
    stats.set_defaults(command=_stats_command)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="serve the demo site, crawl it, show the results",
        description="Serve the built-in demo site on 127.0.0.1, crawl it into data/demo.db, "
        "print the summary and an example query, and stop the site.",
    )
    demo.add_argument("--pages", type=_count, default=300, help="pages in the demo site")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    demo.set_defaults(command=_demo_command)

    site = commands.add_parser(
        "demo-site",
        parents=[common],
        help="serve the demo site only",
        description="Serve the demo site until Ctrl-C (to try crawls on).",
    )
    site.add_argument("--pages", type=_count, default=300)
    site.add_argument("--port", type=_port, default=8080)
    site.add_argument("--latency", type=_seconds, default=0.0, help="seconds added per response")
    site.set_defaults(command=_demo_site_command)

    commands.add_parser(
        "bench",
        add_help=False,
        help="benchmark against Scrapy and a bare aiohttp loop (scraper bench --help)",
    )
    return parser


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


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
    summary = asyncio.run(_crawl(config, quiet=args.quiet, fresh=args.fresh), debug=args.debug_loop)
    print_stats(config.storage.db, summary.crawl_id)  # summary.db has no password to connect
    return EXIT_INTERRUPTED if summary.status == "interrupted" else 0


async def _crawl(config: Config, *, quiet: bool, fresh: bool = False) -> CrawlSummary:
    from scraper.cli.progress import choose_mode, show_progress
    from scraper.crawl.crawler import Crawler

    crawler = Crawler(config, fresh=fresh, announce=_say)
    _settle_the_garbage_collector()
    if asyncio.get_running_loop().get_debug():
        _say("asyncio debug mode (--debug-loop): callbacks holding the loop over 100 ms are logged")
    mode = choose_mode(quiet=quiet, stream=sys.stdout)
    with _stop_on_signals(crawler):
        async with show_progress(crawler.snapshot, mode, config.log.interval):
            return await crawler.run()


def _settle_the_garbage_collector() -> None:
    """Fewer and shorter GC pauses while crawling. Everything allocated so far (modules, the
    config) lives as long as the process: freezing it keeps every later full collection from
    scanning it again. And a crawl allocates fast, mostly short-lived objects: collecting the
    youngest generation every 10,000 allocations instead of 700 does far less work. Measured on
    the 10,000-page benchmark: loop-lag p99 21-51 ms -> 11-18 ms, and 15% more pages/s."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _say(message: str) -> None:
    print(f"scraper: {message}", file=sys.stderr, flush=True)


def _crawls_command(args: argparse.Namespace) -> int:
    config = _load(args, {})
    with open_results(config.storage.db) as reader:
        crawls = reader.list_crawls()
        write_table(crawls.columns, crawls.rows, sys.stdout)
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
    if (args.sql is None) == (args.preset is None):
        raise ConfigError("query: give either SQL or --preset NAME (see scraper query --help)")
    sql = PRESETS[args.preset].sql if args.preset else args.sql
    run_query(_load(args, {}).storage.db, sql, sys.stdout, args.format, preset=args.preset)
    return 0


def _export_command(args: argparse.Namespace) -> int:
    db = _load(args, {}).storage.db
    with output_file(args.out, sys.stdout) as out:
        export(db, out, args.format, args.crawl)
    return 0


def _report_command(args: argparse.Namespace) -> int:
    db = _load(args, {}).storage.db
    from scraper.results.report import default_path, write_report

    path = args.out or default_path(db)
    with output_file(path, sys.stdout) as out:
        stats = write_report(db, out, args.crawl)
    print(f"Report on crawl {stats.crawl_id}: {path}  (open it in a browser; it needs no network)")
    return 0


def _stats_command(args: argparse.Namespace) -> int:
    print_stats(_load(args, {}).storage.db, args.crawl)
    return 0


def print_stats(db: str, crawl_id: int | None) -> None:
    with open_results(db) as reader:
        print(format_stats(crawl_stats(reader, reader.find_crawl(crawl_id))))


def _demo_command(args: argparse.Namespace) -> int:
    from scraper.demosite import SiteSpec

    spec = SiteSpec(pages=args.pages)
    db = Path(args.db or DEMO_DB)
    _replace_demo_database(db)
    summary = asyncio.run(_demo(args, spec, str(db)))
    print_stats(summary.db, summary.crawl_id)
    print(f'\nExample query:  scraper query --db {db} "{DEMO_QUERY}"\n')
    run_query(db, DEMO_QUERY, sys.stdout)
    return EXIT_INTERRUPTED if summary.status == "interrupted" else 0


def _replace_demo_database(db: Path) -> None:
    """The demo starts from an empty database: remove the last demo's, never anything else."""
    if db.exists():
        if not _is_demo_database(db):
            raise ScraperError(
                f"{db}: exists and is not a database of an earlier demo; "
                "choose another --db (the demo replaces its database on every run)"
            )
        for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            stale.unlink(missing_ok=True)


def _is_demo_database(db: Path) -> bool:
    try:
        with open_results(str(db)) as reader:
            seeds = reader.seeds()
    except ScraperError:
        return False
    return bool(seeds) and all(s.startswith('["http://127.0.0.1:') for s in seeds)


async def _demo(args: argparse.Namespace, spec: SiteSpec, db: str) -> CrawlSummary:
    from scraper.demosite import serve

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
        return await _crawl(config, quiet=args.quiet, fresh=True)
    finally:
        await runner.cleanup()


def _demo_site_command(args: argparse.Namespace) -> int:
    async def serve_forever() -> None:
        from scraper.demosite import SiteSpec, serve

        try:
            runner = await serve(SiteSpec(pages=args.pages, latency=args.latency), port=args.port)
        except OSError as exc:
            raise ScraperError(
                f"demo-site: cannot listen on port {args.port}: {exc.strerror}"
            ) from None
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
        from scraper.bench.harness import main as bench
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
