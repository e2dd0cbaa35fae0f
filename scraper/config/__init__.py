"""config.toml → typed, frozen objects, one per section.

The file is read once, at the edge (the CLI); every stage receives only its own section. Every value
is checked before any request is made: a bad one raises ConfigError with one line naming the key,
the value and what is allowed.

checks.py    the value checks (each says what is allowed) and the wording of a bad value's error
cpus.py      the CPUs this process may use, and what parse.workers = "auto" makes of them
sections.py  the frozen section classes ([crawl], [fetch], ...) and Config, which holds them
extract.py   the [extract] table → extraction rules and per-URL rule sets
load.py      load_config and build_config: TOML, --set overrides, command-line values, checking
"""

from scraper.config.cpus import auto_workers, quota_cpus, usable_cpus
from scraper.config.load import build_config, load_config
from scraper.config.sections import (
    SECTIONS,
    SKIP_EXTENSIONS,
    Config,
    CrawlConfig,
    FetchConfig,
    LogConfig,
    ParseConfig,
    StorageConfig,
)

__all__ = [
    "SECTIONS",
    "SKIP_EXTENSIONS",
    "Config",
    "CrawlConfig",
    "FetchConfig",
    "LogConfig",
    "ParseConfig",
    "StorageConfig",
    "auto_workers",
    "build_config",
    "load_config",
    "quota_cpus",
    "usable_cpus",
]
