"""`scraper report`: one self-contained HTML file about a crawl, to open offline in any browser.

Charts are plotly figures; plotly's JavaScript (shipped inside the plotly wheel) is inlined once, so
the file needs no network. The numbers come from the backend's ResultsReader (aggregates, or one
ordered pass), so a large crawl makes a report of the same size as a small one.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import plotly.graph_objects as go
import plotly.offline

from scraper.results.stats import CrawlStats, crawl_stats, percentiles
from scraper.store import open_results
from scraper.store.base import ResultsReader
from scraper.store.location import is_postgres

MAX_ERROR_ROWS = 500
MAX_HOSTS = 15
MAX_CONTENT_TYPES = 12  # bars on the content-type chart; the rest are one "other"
TIME_BUCKETS = 60  # points on the pages-per-second chart, at most
CHART_CONFIG = {"displaylogo": False, "responsive": True}
STATUS_COLORS = {"2": "#2a9d8f", "3": "#457b9d", "4": "#e9c46a", "5": "#e76f51"}


@dataclass(frozen=True, slots=True)
class ErrorsOfKind:
    kind: str  # a models.ErrorKind's value, as the database holds it
    pages: int
    url: str
    error: str | None


@dataclass(frozen=True, slots=True)
class ErrorPage:
    url: str
    status: int | None
    kind: str
    error: str | None
    referrer: str | None


def write_report(db: str, out: Any, crawl_id: int | None = None) -> CrawlStats:
    """Write the report of crawl `crawl_id` (default: the latest) to the text stream `out`."""
    with open_results(db) as reader:
        crawl = reader.find_crawl(crawl_id)
        stats = crawl_stats(reader, crawl)
        charts = [
            throughput_chart(reader, crawl.id),
            status_chart(reader, crawl.id),
            latency_chart(reader, crawl.id),
            depth_chart(reader, crawl.id),
            content_type_chart(reader, crawl.id),
        ]
        page = _template().render(
            stats=stats,
            crawl=crawl,
            made_at=datetime.now(UTC).isoformat(timespec="seconds"),
            plotly_js=plotly.offline.get_plotlyjs(),
            charts=[_div(chart, name) for name, chart in charts],
            errors_by_kind=list(errors_by_kind(reader, crawl.id)),
            error_pages=list(error_pages(reader, crawl.id)),
        )
    out.write(page)
    return stats


def default_path(db: str) -> Path:
    """data/crawl.db → data/crawl-report.html; a PostgreSQL URL → data/NAME-report.html, NAME
    being its database's name: where a SQLite crawl's results go by default."""
    if is_postgres(db):
        name = urlsplit(db).path.strip("/") or "postgres"
        return Path("data") / f"{name}-report.html"
    path = Path(db)
    return path.with_name(f"{path.stem}-report.html")


def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("scraper.results", "templates"),
        autoescape=True,  # URLs and error messages come from the web: escape them
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2")


def _div(figure: go.Figure, name: str) -> str:
    figure.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50})
    html: str = figure.to_html(
        full_html=False, include_plotlyjs=False, div_id=f"chart-{name}", config=CHART_CONFIG
    )
    return html


def throughput_chart(reader: ResultsReader, crawl_id: int) -> tuple[str, go.Figure]:
    span = reader.fetch_span(crawl_id)
    xs: list[float] = []
    ys: list[float] = []
    if span is not None:
        width = max(span / TIME_BUCKETS, 0.1)
        counts = reader.pages_per_bucket(crawl_id, width)
        for bucket in range(max(counts) + 1):  # empty buckets are 0 pages/s, not a gap
            xs.append(round((bucket + 0.5) * width, 2))
            ys.append(round(counts.get(bucket, 0) / width, 2))
    figure = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name="pages/s"))
    figure.update_layout(
        title="Pages per second", xaxis_title="seconds since the first fetch", yaxis_title="pages/s"
    )
    return "throughput", figure


def status_chart(reader: ResultsReader, crawl_id: int) -> tuple[str, go.Figure]:
    rows = reader.status_counts(crawl_id)
    labels = [label for label, _ in rows]
    colors = [STATUS_COLORS.get(label[0], "#999999") for label in labels]
    counts = [n for _, n in rows]
    figure = go.Figure(
        go.Bar(
            x=labels, y=counts, marker_color=colors, name="pages", text=counts,
            textposition="outside", cliponaxis=False,
        )
    )  # fmt: skip
    # A log scale and a count on each bar: 30 errors beside 2,970 pages are seen, not a sliver.
    figure.update_layout(
        title="HTTP status", xaxis_type="category", yaxis_title="pages (log scale)",
        yaxis_type="log",
    )  # fmt: skip
    return "status", figure


def latency_chart(reader: ResultsReader, crawl_id: int) -> tuple[str, go.Figure]:
    """p50/p95/p99 of the response time for the hosts with the most pages."""
    by_host = latency_by_host(reader, crawl_id)
    hosts = list(by_host)
    figure = go.Figure(
        [go.Bar(name=f"p{p}", x=hosts, y=[by_host[h].get(p) for h in hosts]) for p in (50, 95, 99)]
    )
    figure.update_layout(
        title="Latency by host", barmode="group", xaxis_type="category", yaxis_title="ms"
    )
    return "latency", figure


def latency_by_host(reader: ResultsReader, crawl_id: int) -> dict[str, dict[int, float]]:
    counts, rows = reader.host_latencies(crawl_id, MAX_HOSTS)
    found = {
        host: percentiles((ms for _, ms in group), counts[host])
        for host, group in itertools.groupby(rows, key=lambda row: row[0])
        if host in counts
    }
    return {host: found[host] for host in counts}  # busiest first


def depth_chart(reader: ResultsReader, crawl_id: int) -> tuple[str, go.Figure]:
    rows = reader.depth_counts(crawl_id)
    figure = go.Figure(go.Bar(x=[d for d, _ in rows], y=[n for _, n in rows], name="pages"))
    figure.update_layout(
        title="Pages by depth", xaxis_title="links from a seed", yaxis_title="pages",
        xaxis={"tickmode": "linear", "tick0": 0, "dtick": 1},  # depths are whole numbers
    )  # fmt: skip
    return "depth", figure


def content_type_chart(reader: ResultsReader, crawl_id: int) -> tuple[str, go.Figure]:
    kinds = content_types(reader.content_type_counts(crawl_id))
    figure = go.Figure(go.Bar(x=list(kinds), y=list(kinds.values()), name="pages"))
    figure.update_layout(title="Content types", xaxis_type="category", yaxis_title="pages")
    return "content-types", figure


def content_types(rows: list[tuple[str | None, int]]) -> dict[str, int]:
    """Pages by media type (`text/html; charset=UTF-8` and `Text/HTML` are one), the most common
    first; past MAX_CONTENT_TYPES the rest are "other" (a hostile site may send a new one each
    page)."""
    folded: collections.Counter[str] = collections.Counter()
    for header, n in rows:
        kind = header.split(";", 1)[0].strip().lower() if header else ""
        folded[kind or "none"] += n
    top = dict(folded.most_common(MAX_CONTENT_TYPES))
    rest = sum(folded.values()) - sum(top.values())
    return {**top, "other": rest} if rest else top


def errors_by_kind(reader: ResultsReader, crawl_id: int) -> Iterator[ErrorsOfKind]:
    return (ErrorsOfKind(*row) for row in reader.errors_by_kind(crawl_id))


def error_pages(reader: ResultsReader, crawl_id: int) -> Iterator[ErrorPage]:
    return (ErrorPage(*row) for row in reader.error_pages(crawl_id, MAX_ERROR_ROWS))
