"""What every command shares: the common options, reading the config they name, the exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from scraper.cli.logs import FORMATS as LOG_FORMATS
from scraper.cli.logs import LEVELS
from scraper.config import SECTIONS, Config, load_config

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
        "--config",
        type=Path,
        help="config file (default: ./config.toml when there is one; the crawl names the file "
        "it read)",
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
        help="results database: a SQLite file's path or a postgresql://user@host/dbname URL "
        f"(storage.db; default: {default('storage.db')})",
    )
    common.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=LEVELS,
        help="(default: WARNING)",
    )
    common.add_argument("--log-file", type=Path, help="also append the log to this file")
    common.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="json: one object per line (default: text)",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    return common


def default(key: str) -> str:
    """A config key's default as help texts show it: `default("fetch.concurrency")` is "16"."""
    section, _, name = key.partition(".")
    value = getattr(SECTIONS[section](), name)
    return f"{value}, no limit" if value == 0 and name.startswith("max_") else str(value)


def config_path(args: argparse.Namespace, *, use_file: bool = True) -> Path | None:
    """The config file the common options name: --config, else ./config.toml when there is one
    (unless not `use_file`); None: defaults only."""
    if args.config is None and use_file and DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    return args.config  # type: ignore[no-any-return]


def load(
    args: argparse.Namespace,
    values: dict[str, Any],
    *,
    use_file: bool = True,
    below: dict[str, Any] | None = None,
) -> Config:
    """The config the common options name (`config_path`), with `values` ("section.key" →
    value: the command's own options) applied last, and `below` (a spider's settings) between
    the file and the --set overrides."""
    path = config_path(args, use_file=use_file)
    if args.db:
        values["storage.db"] = args.db
    return load_config(path, overrides=args.overrides, values=values, below=below)
