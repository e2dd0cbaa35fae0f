"""The commands that read a results database: crawls, query, export, report, stats.

The report's stack (plotly, jinja2) is imported by `scraper report` alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scraper.cli.common import load
from scraper.cli.output import output_file
from scraper.errors import ConfigError
from scraper.results.export import FORMATS as EXPORT_FORMATS
from scraper.results.export import export, export_items
from scraper.results.formats import write_table
from scraper.results.presets import PRESETS
from scraper.results.query import FORMATS, run_query
from scraper.store import open_results

if TYPE_CHECKING:
    from scraper.cli.common import Commands


CSV_FORMULAS_HELP = (
    "CSV: write cells that start with = + - @ as they are (default: with a leading ' so a "
    "spreadsheet shows them as text, not as formulas a page could plant)"
)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def add_parsers(commands: Commands, common: argparse.ArgumentParser) -> None:
    _add_crawls(commands, common)
    _add_query(commands, common)
    _add_export(commands, common)
    _add_report(commands, common)
    _add_stats(commands, common)


def print_stats(db: str, crawl_id: int | None) -> None:
    """The summary of crawl `crawl_id` (None: the latest) in the database `db`, on stdout."""
    from scraper.results.stats import crawl_stats, format_stats  # at a crawl's end: not its start

    with open_results(db) as reader:
        print(format_stats(crawl_stats(reader, reader.find_crawl(crawl_id))))


def _add_crawls(commands: Commands, common: argparse.ArgumentParser) -> None:
    crawls = commands.add_parser(
        "crawls",
        parents=[common],
        help="list the crawls in the database",
        description="List the crawls in the database with their state and counters.",
    )
    crawls.set_defaults(command=_crawls_command)


def _crawls_command(args: argparse.Namespace) -> int:
    config = load(args, {})
    with open_results(config.storage.db) as reader:
        crawls = reader.list_crawls()
        write_table(crawls.columns, crawls.rows, sys.stdout)
    return 0


def _add_query(commands: Commands, common: argparse.ArgumentParser) -> None:
    query = commands.add_parser(
        "query",
        parents=[common],
        help="run read-only SQL on the results",
        description="Run one read-only SQL statement, or a named one, on the results.",
        epilog="presets:\n"
        + "\n".join(f"  {p.name:<16}{p.about}" for p in PRESETS.values())
        + "\n(the manual's guide to the database shows their SQL)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    query.add_argument(
        "sql", nargs="?", help='e.g. "SELECT url, status, title FROM pages LIMIT 10"'
    )
    query.add_argument("--preset", choices=PRESETS, help="a named query instead of SQL")
    query.add_argument("--format", choices=FORMATS, default="table", help="how rows are written")
    query.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop the statement after this long (default: no limit; Ctrl-C stops it too)",
    )
    query.add_argument("--csv-formulas", action="store_true", help=CSV_FORMULAS_HELP)
    query.set_defaults(command=_query_command)


def _query_command(args: argparse.Namespace) -> int:
    if (args.sql is None) == (args.preset is None):
        raise ConfigError("query: give either SQL or --preset NAME (see scraper query --help)")
    sql = PRESETS[args.preset].sql if args.preset else args.sql
    db = load(args, {}).storage.db
    run_query(
        db,
        sql,
        sys.stdout,
        args.format,
        timeout=args.timeout,
        formulas=args.csv_formulas,
        preset=args.preset,
    )
    return 0


def _add_export(commands: Commands, common: argparse.ArgumentParser) -> None:
    exporter = commands.add_parser(
        "export",
        parents=[common],
        help="write the pages and their fields (or a spider's items) as JSON lines or CSV",
        description="Write every page with its extracted fields, streamed: JSON lines keep "
        "fields as an object, CSV gives each field a column (fields.NAME). With --items, "
        "the items a spider yielded instead: a JSON line each, or a CSV column per key.",
    )
    exporter.add_argument(
        "--items", action="store_true", help="the spider's items (the items table), not pages"
    )
    exporter.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="jsonl",
        help="JSON lines, CSV, or cdxj: the index of the WARC records (storage.warc)",
    )
    exporter.add_argument("--out", type=Path, metavar="FILE", help="default: standard output")
    exporter.add_argument(
        "--crawl", type=int, metavar="ID", help="only this crawl's pages (or items)"
    )
    exporter.add_argument("--csv-formulas", action="store_true", help=CSV_FORMULAS_HELP)
    exporter.set_defaults(command=_export_command)


def _export_command(args: argparse.Namespace) -> int:
    db = load(args, {}).storage.db
    with output_file(args.out, sys.stdout) as out:
        write = export_items if args.items else export
        write(db, out, args.format, args.crawl, formulas=args.csv_formulas)
    return 0


def _add_report(commands: Commands, common: argparse.ArgumentParser) -> None:
    report = commands.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report of a crawl",
        description="Write one HTML file (charts and error tables; opens offline) about a crawl.",
    )
    report.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="default: beside the database, NAME-report.html (for a PostgreSQL URL, "
        "data/DBNAME-report.html)",
    )
    report.add_argument("--crawl", type=int, metavar="ID", help="which crawl (default: the latest)")
    report.set_defaults(command=_report_command)


def _report_command(args: argparse.Namespace) -> int:
    db = load(args, {}).storage.db
    from scraper.results.report import default_path, write_report

    path = args.out or default_path(db)
    with output_file(path, sys.stdout) as out:
        stats = write_report(db, out, args.crawl)
    print(f"Report on crawl {stats.crawl_id}: {path}  (open it in a browser; it needs no network)")
    return 0


def _add_stats(commands: Commands, common: argparse.ArgumentParser) -> None:
    stats = commands.add_parser(
        "stats",
        parents=[common],
        help="the summary of a crawl (finished or running)",
        description="Print a crawl's summary: pages by status, errors by kind, top hosts, "
        "latency percentiles, speed. Works while the crawl runs.",
    )
    stats.add_argument("--crawl", type=int, metavar="ID", help="which crawl (default: the latest)")
    stats.set_defaults(command=_stats_command)


def _stats_command(args: argparse.Namespace) -> int:
    print_stats(load(args, {}).storage.db, args.crawl)
    return 0
