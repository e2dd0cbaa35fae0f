"""scraper: an async, concurrent web crawler that stores what it finds in SQLite or PostgreSQL.

The public names: `Spider`, `Request`, `Page` and `Node` (writing a spider), `Crawl` and `crawl`
(the crawler as a library). `Crawl` and `crawl` import the crawl's stack when first used, so
`import scraper` stays light (the parse workers import it too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scraper.spider.api import Request, Spider

if TYPE_CHECKING:
    from scraper.library import Crawl, crawl
    from scraper.spider.page import Node, Page

__version__ = "0.1.0"
__all__ = ["Crawl", "Node", "Page", "Request", "Spider", "crawl"]


def __getattr__(name: str) -> Any:
    if name in ("Crawl", "crawl"):
        from scraper import library

        return getattr(library, name)
    if name in ("Page", "Node"):
        from scraper.spider import page

        return getattr(page, name)
    raise AttributeError(f"module 'scraper' has no attribute {name!r}")
