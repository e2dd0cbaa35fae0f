"""The command line: a thin edge that reads config, runs a command and maps errors to exit codes.

Exit codes: 0 the command ran (fetch errors are data in the database), 2 usage, config or other
user errors (one line on stderr), 130 interrupted.

Each command group builds its own parsers and handles its own commands: crawl.py (crawl),
results.py (crawls, query, export, report, stats), demo.py (demo, demo-site), parse.py (parse);
common.py holds the options they all take. The crawl's stack (aiohttp, rich) and the report's
(plotly, jinja2) are imported by the commands that use them: `scraper query` and friends start
in a fraction of the time. The benchmark is a developer tool outside the package (bench/ in the
repository).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from scraper import __version__
from scraper.cli import crawl, demo, parse, results
from scraper.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, common_options
from scraper.cli.logs import setup_logging
from scraper.errors import ScraperError

log = logging.getLogger("scraper")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        with setup_logging(args.log_level, args.log_file, args.log_format):
            return int(args.command(args))
    except ScraperError as exc:
        if args.debug:
            traceback.print_exc()
        for line in exc.lines:
            print(f"scraper: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("scraper: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`scraper export | head`): not an error. Point stdout at devnull
        # so the interpreter's final flush does not complain about the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser under one (the manual's CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="scraper",
        description="An async web crawler and scraper that stores what it finds in SQLite or\n"
        "PostgreSQL, to query with SQL.",
        epilog="start with:\n"
        "  scraper crawl https://example.com/ --max-pages 100 --db data/example.db\n"
        "  scraper stats --db data/example.db\n"
        '  scraper query --db data/example.db "SELECT url, status, title FROM pages"\n'
        "`scraper COMMAND --help` tells each command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"scraper {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    common = common_options()
    crawl.add_parsers(commands, common)
    parse.add_parsers(commands, common)
    results.add_parsers(commands, common)
    demo.add_parsers(commands, common)
    return parser
