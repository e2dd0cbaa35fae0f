"""`scraper bench`: handed over whole to scraper.bench, which parses its own options."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from scraper.cli.common import EXIT_INTERRUPTED, EXIT_USAGE

if TYPE_CHECKING:
    from scraper.cli.common import Commands


def add_parsers(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Listed in `scraper --help` only: main() hands `scraper bench ...` over before parsing, so
    the common options do not apply."""
    commands.add_parser(
        "bench",
        add_help=False,
        help="benchmark against Scrapy and a bare aiohttp loop (scraper bench --help)",
    )


def run(argv: list[str]) -> int:
    """Run the benchmark with its own arguments `argv` (psutil and Scrapy: the `bench` extra)."""
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
