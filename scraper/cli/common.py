"""What every command shares: the common options, reading the config they name, the exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from scraper.cli.logs import FORMATS as LOG_FORMATS
from scraper.cli.logs import LEVELS
from scraper.config import Config, load_config

if TYPE_CHECKING:
    # What ArgumentParser.add_subparsers returns: each command group adds its parsers to it.
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

DEFAULT_CONFIG = Path("config.toml")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def common_options() -> argparse.ArgumentParser:
    """The options every command takes (the parent of each command's parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, metavar="PATH", help="config file (default: ./config.toml if any)"
    )
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (a TOML value); repeatable",
    )
    common.add_argument(
        "--db",
        metavar="PATH|URL",
        help="results database (storage.db): a SQLite path or a postgresql:// URL",
    )
    common.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=LEVELS,
        help="the least level logged to stderr (and --log-file)",
    )
    common.add_argument(
        "--log-file", type=Path, metavar="PATH", help="also append the log to this file"
    )
    common.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="json: one object per line"
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return common


def load(args: argparse.Namespace, values: dict[str, Any], *, use_file: bool = True) -> Config:
    """The config the common options name (./config.toml by default, unless not `use_file`),
    with `values` ("section.key" → value: the command's own options) applied last."""
    path = args.config
    if path is None and use_file and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if args.db:
        values["storage.db"] = args.db
    return load_config(path, overrides=args.overrides, values=values)
