"""The shop site of `make bench`'s shop case, written to disk: products reachable only through
the JSON embedded in the listing pages, as issue #21's spiders are for.

It uses the demo site's URL space, so both servers serve it as they serve the demo site
(`site.file_for`): `/` and `/list?page=K` are listings, each with a `<script id="data">` of
PER_LISTING product ids and the next listing's URL; `/page/N` is product N, ~40 KB like the cpu
case's pages, with a name (`h1`), a price (`p.price`) and 45 links to other products that no
spider follows. A full crawl stores every listing and every product: `paths`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

PER_LISTING = 50
PAGE_BYTES = 40_000
FORMAT = 1  # bump when the layout changes: cached shops are rebuilt


def listings(products: int) -> int:
    return max(1, -(-products // PER_LISTING))


def paths(products: int) -> list[str]:
    """Every path a full crawl from / stores."""
    count = listings(products)
    return ["/", *(f"/list?page={k}" for k in range(1, count)),
            *(f"/page/{n}" for n in range(products))]  # fmt: skip


def listing_html(k: int, products: int) -> str:
    ids = list(range(k * PER_LISTING, min(products, (k + 1) * PER_LISTING)))
    data: dict[str, object] = {"products": ids}
    if k + 1 < listings(products):
        data["next"] = f"/list?page={k + 1}"
    return (
        f"<!doctype html><html><head><title>Shop, page {k}</title></head><body>"
        f"<h1>Our products</h1><div id=app></div>"
        f'<script id="data" type="application/json">{json.dumps(data)}</script></body></html>'
    )


def product_html(n: int, products: int) -> str:
    rng = random.Random(n)
    links = "".join(
        f'<li><a href="/page/{rng.randrange(products)}">Product {n}-{i}</a></li>' for i in range(45)
    )
    words = " ".join(rng.choice(_WORDS) for _ in range(PAGE_BYTES // 7))
    return (
        f"<!doctype html><html><head><title>Product {n}</title>"
        f'<meta name="description" content="Product {n} of the shop"></head><body>'
        f"<nav><ul>{links}</ul></nav><main><h1>Product {n}</h1>"
        f'<p class="price">{n % 97 + 0.99:.2f}</p><p>{words}</p></main></body></html>'
    )


_WORDS = [
    "shop",
    "price",
    "product",
    "quality",
    "fast",
    "cheap",
    "blue",
    "red",
    "green",
    "large",
    "small",
    "new",
]


def write_shop(products: int, root: Path) -> None:
    (root / "page").mkdir(parents=True, exist_ok=True)
    (root / "list").mkdir(exist_ok=True)
    (root / "index.html").write_text(listing_html(0, products))
    for k in range(1, listings(products)):
        (root / "list" / f"{k}.html").write_text(listing_html(k, products))
    for n in range(products):
        (root / "page" / str(n)).write_text(product_html(n, products))
    (root / "done").write_text("")  # last: its presence means complete


def cached_shop(products: int, cache: Path) -> Path:
    """The shop of `products` products under `cache`, written first if it is not there yet."""
    root = cache / f"shop-{FORMAT}-{products}p"
    if (root / "done").is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        write_shop(products, building)
        for folder in (building, building / "page", building / "list"):
            folder.chmod(0o755)
        with contextlib.suppress(OSError):
            os.rename(building, root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return root
