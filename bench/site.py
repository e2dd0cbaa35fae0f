"""The demo site written to disk, for a static web server to serve.

The pages are `scraper.demosite.render`'s, so the link graph is the one `SiteSpec` knows: a full
crawl from / must store exactly `spec.reachable()`. URL → file: `/` → `index.html`, `/page/N` →
`page/N`, `/list?page=K` → `list/K.html` (`file_for`, shared by both servers). Writing 10,000 pages
takes ~15 s, so finished sites are kept in a cache folder, one per spec, and reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from scraper.demosite import SiteSpec, render

FORMAT = 1  # bump when the layout on disk changes, so cached sites are rebuilt
_LIST_ARGS = re.compile(r"page=(\d+)")


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a written site claims to hold; the tests check it against the files."""

    pages: int  # /page/N files
    lists: int  # /list?page=K files
    files: int  # all HTML files, the home page included
    links: int  # links between this site's pages, over all files
    reachable: int  # paths a full crawl from / must store
    bytes: int  # of all files

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def check_spec(spec: SiteSpec) -> None:
    """A static site cannot fail, flake or redirect: only the plain pages are written."""
    if spec.extras or spec.error_rate or spec.latency:
        raise ValueError("a benchmark site needs extras=False, error_rate=0 and latency=0")


def site_paths(spec: SiteSpec) -> list[str]:
    """Every URL path the site serves: the home page, every page, every list page."""
    lists = max(1, spec.pages // 50 + 1)  # as many as SiteSpec.page_links can point to
    return [
        "/",
        *(f"/page/{i}" for i in range(spec.pages)),
        *(f"/list?page={k}" for k in range(lists)),
    ]


def file_for(path: str, query: str = "") -> str | None:
    """The file (relative to the site's root) that serves `path`?`query`, or None (a 404)."""
    if path == "/":
        return "index.html"
    if path.startswith("/page/") and path[6:].isdigit():
        return f"page/{path[6:]}"
    if path == "/list" and (match := _LIST_ARGS.fullmatch(query)):
        return f"list/{match.group(1)}.html"
    return None


def write_site(spec: SiteSpec, root: Path) -> Manifest:
    """Write the site under `root` (which must not exist yet or be empty) and its manifest."""
    check_spec(spec)
    (root / "page").mkdir(parents=True, exist_ok=True)
    (root / "list").mkdir(exist_ok=True)
    files = links = size = 0
    for url in site_paths(spec):
        path, _, query = url.partition("?")
        name = file_for(path, query)
        html = render(spec, url)
        assert name is not None and html is not None, url
        data = html.encode()
        (root / name).write_bytes(data)
        files += 1
        links += len(spec.links_from(url))
        size += len(data)
    manifest = Manifest(
        pages=spec.pages,
        lists=files - 1 - spec.pages,
        files=files,
        links=links,
        reachable=len(spec.reachable()),
        bytes=size,
    )
    (root / "manifest.json").write_text(manifest.to_json())  # last: its presence means complete
    return manifest


def read_manifest(root: Path) -> Manifest:
    return Manifest(**json.loads((root / "manifest.json").read_text()))


def cached_site(spec: SiteSpec, cache: Path) -> tuple[Path, Manifest]:
    """The site for `spec` under `cache`, written first if it is not there yet.

    Built in a private folder and renamed into place, so two benchmarks started at once never see
    half a site. The folders are world-readable: nginx's workers may run as another user.
    """
    key = hashlib.sha256(f"{FORMAT}:{spec!r}".encode()).hexdigest()[:16]
    root = cache / f"site-{spec.pages}p-{spec.page_bytes // 1000}k-{key}"
    if (root / "manifest.json").is_file():
        return root, read_manifest(root)
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        manifest = write_site(spec, building)
        for folder in (building, building / "page", building / "list"):
            folder.chmod(0o755)
        with contextlib.suppress(OSError):  # another run finished the same site first
            os.rename(building, root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return root, manifest


def default_cache() -> Path:
    return Path(tempfile.gettempdir()) / "scraper-bench-sites"
