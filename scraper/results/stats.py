"""A crawl's summary, computed from the database: the end of `scraper crawl` and `scraper stats`.

Everything comes from the pages table (status, error_kind, bytes, elapsed_ms, url) through the
backend's ResultsReader (whose counts are the ones the crawl writes at its end), so the summary
agrees with what `scraper query` shows and works as well for a crawl still running. A page that a
later crawl fetched again belongs to that later crawl.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from scraper.store.base import CrawlLimits, CrawlRow, HostCount, ResultsReader
from scraper.terminal import visible

PERCENTILES = (50, 95, 99)
TOP_HOSTS = 5


@dataclass(frozen=True, slots=True)
class CrawlStats:
    crawl_id: int
    status: str
    db: str
    duration_s: float
    pages: int
    errors: int
    bytes: int
    by_status: dict[str, int] = field(default_factory=dict)
    by_error: dict[str, int] = field(default_factory=dict)
    top_hosts: tuple[HostCount, ...] = ()
    latency_ms: dict[int, float] = field(default_factory=dict)  # percentile → milliseconds
    loop_lag_ms: dict[str, float] = field(default_factory=dict)  # p50, p99, max of the loop
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # load and queue per stage
    host_settings: dict[str, dict[str, float]] = field(default_factory=dict)  # at the end
    workers: tuple[tuple[str, int, str], ...] = ()  # (worker, pages, state): several processes
    limits: CrawlLimits | None = None
    items_by_callback: tuple[tuple[str, int], ...] = ()  # a spider's items, per callback
    item_pages: int = 0  # pages that yielded items
    # fetch.proxies: per proxy (its address, no credentials), requests, failures, times benched
    proxies: dict[str, dict[str, int]] = field(default_factory=dict)
    # fetch.sessions: sessions retired in all, and per host its requests and retirements
    sessions: dict[str, Any] = field(default_factory=dict)

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.duration_s if self.duration_s > 0 else 0.0


def crawl_stats(reader: ResultsReader, crawl: CrawlRow) -> CrawlStats:
    counters = json.loads(crawl.counters) if crawl.counters else {}
    counts = reader.counts(crawl.id)
    measured, latencies = reader.latencies(crawl.id)
    by_callback, item_pages = reader.item_counts(crawl.id)
    return CrawlStats(
        crawl_id=crawl.id,
        status=crawl.status,
        db=reader.location,
        duration_s=duration(crawl),
        pages=counts.pages,
        errors=counts.errors,
        bytes=counts.bytes,
        by_status=counts.by_status,
        by_error=counts.by_error,
        top_hosts=tuple(reader.top_hosts(crawl.id, TOP_HOSTS)),
        latency_ms=percentiles(latencies, measured),
        loop_lag_ms=counters.get("loop_lag_ms", {}),
        stages=counters.get("stages", {}),
        host_settings=counters.get("hosts", {}),
        workers=tuple(reader.worker_shares(crawl.id)),
        limits=reader.limits(crawl.id),
        items_by_callback=tuple(by_callback),
        item_pages=item_pages,
        proxies=counters.get("proxies", {}),
        sessions=counters.get("sessions", {}),
    )


def duration(crawl: CrawlRow) -> float:
    """Seconds the crawl ran; for one still running, since it first started (a resumed crawl's
    recorded duration covers its earlier runs only)."""
    if crawl.status != "running" and crawl.duration_s is not None:
        return crawl.duration_s
    started = datetime.fromisoformat(crawl.started_at)
    ended = datetime.fromisoformat(crawl.finished_at) if crawl.finished_at else datetime.now(UTC)
    return max(0.0, (ended - started).total_seconds())


def percentiles(
    ordered: Iterable[float], count: int, wanted: Sequence[int] = PERCENTILES
) -> dict[int, float]:
    """Nearest-rank percentiles of `count` values given in ascending order, in one pass and
    constant memory (the database does the sorting)."""
    if count == 0:
        return {}
    rank_of = {p: max(1, math.ceil(p / 100 * count)) for p in wanted}
    ranks = set(rank_of.values())
    found: dict[int, float] = {}
    for rank, value in enumerate(ordered, 1):
        if rank in ranks:
            found[rank] = value
            if len(found) == len(ranks):
                break
    return {p: found[rank] for p, rank in rank_of.items() if rank in found}


def _limit_lines(s: CrawlStats) -> list[str]:
    """Which limit ended a finished crawl, what it left, and how to go on: a limit that acts
    without a word looks like a site with nothing more."""
    limits = s.limits
    if limits is None or s.status != "finished":
        return []
    found = []
    if limits.max_pages and limits.pending and s.pages >= limits.max_pages:
        found.append(f"crawl.max_pages ({limits.max_pages:,}) reached")
    if limits.max_pages_per_host and limits.capped_hosts:
        hosts = "host" if limits.capped_hosts == 1 else "hosts"
        found.append(
            f"crawl.max_pages_per_host ({limits.max_pages_per_host:,}) reached on "
            f"{limits.capped_hosts:,} {hosts}"
        )
    if limits.max_depth and limits.deepest is not None and limits.deepest >= limits.max_depth:
        found.append(f"crawl.max_depth ({limits.max_depth}): links past it not followed")
    if not found:
        return []
    return [
        f"  limits:    {'; '.join(found)}; {limits.pending:,} URLs left pending. To go on, raise "
        "the limit (--max-pages N, --set crawl.KEY=N; 0 = none) and run the same command"
    ]


def _worker_lines(s: CrawlStats) -> list[str]:
    """Each process's share, when several worked on the crawl (PostgreSQL)."""
    if not s.workers:
        return []
    total = sum(pages for _, pages, _ in s.workers) or 1
    shares = ", ".join(
        f"{worker} {pages} ({100 * pages / total:.0f}%, {state})"
        for worker, pages, state in s.workers
    )
    lines = [f"  workers:   {len(s.workers)}: {shares}"]
    if len(s.top_hosts) < min(len(s.workers), TOP_HOSTS):  # top_hosts is every host, then
        lines.append(
            f"             ({len(s.workers)} processes on {len(s.top_hosts)} hosts: a host is one "
            "process's at a time, for politeness, so the others had nothing to do)"
        )
    return lines


def _item_lines(s: CrawlStats) -> list[str]:
    """A spider's items: how many, per callback, and per page that yielded any."""
    if not s.items_by_callback:
        return []
    total = sum(n for _, n in s.items_by_callback)
    each = ", ".join(f"{callback} {n:,}" for callback, n in s.items_by_callback)
    per_page = total / s.item_pages if s.item_pages else 0.0
    return [
        f"  items:     {total:,} ({each}), from {s.item_pages:,} pages ({per_page:.1f} a page); "
        f"scraper export --items --db {shlex.quote(s.db)}"
    ]


def _proxy_lines(s: CrawlStats) -> list[str]:
    """A line for the proxies, when the crawl went through some (fetch.proxies), and one for
    the sessions (fetch.sessions)."""
    each = ", ".join(
        f"{name} {c.get('requests', 0)} requests"
        + (
            f" ({c['failures']} failed, benched {c.get('benched', 0)}×)"
            if c.get("failures")
            else ""
        )
        for name, c in s.proxies.items()
    )
    lines = [f"  proxies:   {each}"] if each else []
    if s.sessions:
        hosts = ", ".join(
            f"{host} {c.get('retired', 0)} of {c.get('requests', 0)} requests"
            for host, c in (s.sessions.get("hosts") or {}).items()
        )
        lines.append(f"  sessions:  {s.sessions.get('retired', 0)} retired ({hosts or 'none'})")
    return lines


def format_stats(s: CrawlStats) -> str:
    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    hosts = ", ".join(
        f"{h.host} {h.pages}" + (f" ({h.errors} errors)" if h.errors else "") for h in s.top_hosts
    )
    latency = ", ".join(f"p{p} {ms:,.0f} ms" for p, ms in s.latency_ms.items())
    lag = ", ".join(
        f"{k} {s.loop_lag_ms[k]:,.1f} ms" for k in ("p50", "p99", "max") if k in s.loop_lag_ms
    )
    if s.loop_lag_ms.get("stalls"):
        lag += f", {s.loop_lag_ms['stalls']:.0f} stalls over 100 ms (see the log)"
    stages = ", ".join(
        f"{name} {st['load_pct']:.0f}% (queue {st.get('queue_mean', 0):.0f})"
        for name, st in s.stages.items()
        if "load_pct" in st
    )
    settings = ", ".join(
        f"{host} ×{h.get('concurrency')} every {h.get('delay_s', 0):.2f} s"
        for host, h in list(s.host_settings.items())[:TOP_HOSTS]
    )
    lines = [
        f"Crawl {s.crawl_id} {s.status}: {s.pages} pages in {s.duration_s:.1f} s "
        f"({s.pages_per_second:.1f} pages/s), {s.bytes / 1e6:.1f} MB",
        f"  by status: {counts(s.by_status)}",
        f"  errors:    {counts(s.by_error)}",
        *_limit_lines(s),
        *_item_lines(s),
        f"  top hosts: {hosts or 'none'}",
        f"  latency:   {latency or 'none'}",
        f"  loop lag:  {lag or 'not measured'}",
        f"  stages:    {stages or 'not measured'} (mean load: the one near 100% limits)",
        f"  per host:  {settings or 'none'} (concurrency and delay at the end)",
        *_worker_lines(s),
        *_proxy_lines(s),
        f"  results:   {s.db}  (scraper query --db {shlex.quote(s.db)} "
        '"SELECT url, status, title FROM pages LIMIT 10")',
    ]
    # Host names, error kinds and the settings come from the web or were shaped by it.
    return "\n".join(visible(line) for line in lines)
