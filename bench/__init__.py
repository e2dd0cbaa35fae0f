"""The benchmarks: developer tools of the repository, not part of the shipped package.

Run from the repository's root (`make bench`, `make bench-memory`, `make bench-scale`,
`make bench-startup`, or `python -m bench ...`); psutil and Scrapy come with the `bench` extra.

    __main__.py  `python -m bench`: our crawler side by side with Scrapy and a bare aiohttp loop
    harness.py   the cases, the table and the ratios
    site.py      the demo site written to disk (same link graph as scraper.demosite), cached
    server.py    serves it: nginx (a private config in a temp dir), or an aiohttp fallback
    rusage.py    runs one crawler and reports the CPU time of its whole process tree
    measure.py   one crawler run: wall time, CPU, peak RSS; did it store every page once?
    bare.py      the floor: a bare aiohttp + selectolax crawl loop of a few dozen lines
    scrapy_crawl.py  the same crawl as a Scrapy spider
    broad.py     thousands of small sites, each to be treated politely (`--cases broad`)
    scale.py     one crawl on 1, 2 and 4 processes on PostgreSQL (`make bench-scale`)
    timeline.py  who held which host when, in a scaling run
    frontier_memory.py  peak RSS against URLs discovered (`make bench-memory`)
    startup.py   from the command to the first request (`make bench-startup`)
    dispatch.py  the scheduler's cost per hand-out against the number of hosts
    pg_drivers.py  PostgreSQL drivers and write paths side by side

The crawler never imports anything here. The throwaway PostgreSQL server is the tests' own
(tests/pgserver.py).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository


def _children_find_this_package() -> None:
    """The tools run each other as `python -m bench.<tool>` from temporary folders (a crawler's
    database and log stay out of the repository), where this package is not importable unless
    the repository is on their PYTHONPATH: children inherit the environment."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *paths])


_children_find_this_package()
