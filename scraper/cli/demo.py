"""`scraper demo` (serve the demo site, crawl it, show the results) and `scraper demo-site`.

The demo site's stack (aiohttp) is imported when one of them runs, not when this module is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scraper.cli.common import EXIT_INTERRUPTED, load
from scraper.cli.crawl import run_crawl
from scraper.cli.results import print_stats
from scraper.errors import ScraperError
from scraper.results.query import run_query
from scraper.store import open_results

if TYPE_CHECKING:
    from scraper.cli.common import Commands
    from scraper.demosite import SiteSpec
    from scraper.store.base import CrawlSummary

DEMO_DB = "data/demo.db"
DEMO_QUERY = (
    "SELECT url, status, title, json_extract(fields, '$.price') AS price "
    "FROM pages WHERE title IS NOT NULL ORDER BY depth, url LIMIT 8"
)


def add_parsers(commands: Commands, common: argparse.ArgumentParser) -> None:
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
    site.add_argument("--pages", type=_count, default=300, help="pages in the demo site")
    site.add_argument("--port", type=_port, default=8080, help="port on 127.0.0.1")
    site.add_argument("--latency", type=_seconds, default=0.0, help="seconds added per response")
    site.set_defaults(command=_demo_site_command)


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
        config = load(args, values, use_file=False)
        print(f"Demo site: {spec.pages} pages at http://127.0.0.1:{port}/ — crawling…")
        return await run_crawl(config, quiet=args.quiet, fresh=True)
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
