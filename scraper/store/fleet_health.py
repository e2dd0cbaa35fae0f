"""How a crawl ran, over every process that worked on it: the health each process records at its
end (loop lag, stage loads, the per-host settings it learned), merged into the one the crawl's row
keeps and its summary shows.

One process is a fleet of one, so there is one merge for every backend: PostgreSQL keeps each
process's health in its `workers` row and merges them all; SQLite, where one process at a time
works on a crawl, merges the health its row already keeps (earlier runs') with this run's. The
merge is associative (merging merged healths gives what merging them all at once would), and the
merge of one health is that health.

- **stages**: per stage, the busy time and the time sampled are summed; the mean load is weighted
  by each process's busy time of that stage, so a process that had nothing to do does not
  dilute the ones that worked (an idle worker showed `fetch 0% ... sink 0%` as the crawl's);
  the queue's mean is weighted by the time sampled, its largest is the largest.
- **loop_lag_ms**: the slowest process's (each process has its own loop, and the slowest is the
  one that holds its requests up); samples and stalls summed.
- **hosts**: the union of every process's, a host that several processes held with the settings
  of the one that ended last; ordered by requests in flight, then by each process's own order,
  so every process's busiest hosts come first.
- **proxies** (fetch.proxies): per proxy, its requests, failures and times benched, summed;
  **sessions** (fetch.sessions): sessions retired, and per host its requests and retirements,
  summed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The crawl's `counters` keys a health holds.
HEALTH_KEYS = ("loop_lag_ms", "stages", "hosts", "proxies", "sessions")
MAX_HOSTS = 50  # per-host settings the merged health keeps (each process records its top 10)

Health = Mapping[str, Any]


def health_of(counters: Mapping[str, Any]) -> dict[str, Any]:
    """The health part of a crawl's `counters` (or of a process's health): {} if none."""
    return {key: counters[key] for key in HEALTH_KEYS if key in counters}


def merge_healths(healths: Sequence[Health]) -> dict[str, Any]:
    """One health for the crawl from its processes', given in the order they ended."""
    present = [health for health in healths if health]
    if not present:
        return {}
    merged = {
        "loop_lag_ms": _merge_lag([h.get("loop_lag_ms") or {} for h in present]),
        "stages": _merge_stages([h.get("stages") or {} for h in present]),
        "hosts": _merge_hosts([h.get("hosts") or {} for h in present]),
    }
    proxies = _merge_proxies([h.get("proxies") or {} for h in present])
    if proxies:  # (only a crawl through fetch.proxies has them)
        merged["proxies"] = proxies
    sessions = [h["sessions"] for h in present if h.get("sessions")]
    if sessions:  # (only a crawl with fetch.sessions has them)
        merged["sessions"] = {
            "retired": sum(int(s.get("retired", 0)) for s in sessions),
            "hosts": _merge_proxies([s.get("hosts") or {} for s in sessions]),
        }
    return merged


def _merge_proxies(
    proxy_sets: Sequence[Mapping[str, Mapping[str, int]]],
) -> dict[str, dict[str, int]]:
    """Per proxy (by its address), each count summed over the processes."""
    merged: dict[str, dict[str, int]] = {}
    for proxies in proxy_sets:
        for name, counts in proxies.items():
            mine = merged.setdefault(name, {})
            for key, value in counts.items():
                mine[key] = mine.get(key, 0) + int(value)
    return merged


def _merge_lag(lags: Sequence[Mapping[str, float]]) -> dict[str, float | int]:
    measured = [lag for lag in lags if lag]
    if not measured:
        return {}
    return {
        "p50": max(float(lag.get("p50", 0.0)) for lag in measured),
        "p99": max(float(lag.get("p99", 0.0)) for lag in measured),
        "max": max(float(lag.get("max", 0.0)) for lag in measured),
        "samples": sum(int(lag.get("samples", 0)) for lag in measured),
        "stalls": sum(int(lag.get("stalls", 0)) for lag in measured),
    }


def _merge_stages(
    stage_sets: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, float | int]]:
    names = list(dict.fromkeys(name for stages in stage_sets for name in stages))
    return {name: _merge_stage([s[name] for s in stage_sets if name in s]) for name in names}


def _merge_stage(parts: Sequence[Mapping[str, float]]) -> dict[str, float | int]:
    if len(parts) == 1:
        return dict(parts[0])
    spans = [_span(part) for part in parts]
    busy = [float(part.get("busy_s", 0.0)) for part in parts]
    span, busy_s = sum(spans), sum(busy)
    loads = [float(part.get("load_pct", 0.0)) for part in parts]
    # (no busy time recorded anywhere: the time-weighted mean, which is then near 0 too)
    load = _weighted(loads, busy if busy_s else spans)
    return {
        "busy_s": round(busy_s, 2),
        "busy_pct": round(busy_s / span * 100, 1) if span else 0.0,
        "load_pct": round(load, 1),
        "queue_mean": round(_weighted([float(p.get("queue_mean", 0.0)) for p in parts], spans), 1),
        "queue_max": max(int(p.get("queue_max", 0)) for p in parts),
        "span_s": round(span, 2),
    }


def _span(stage: Mapping[str, float]) -> float:
    """The seconds a stage was sampled over; a health recorded before `span_s` was kept gives
    it from its busy time and share (none when it was never busy: it weighs nothing then)."""
    if "span_s" in stage:
        return float(stage["span_s"])
    share = float(stage.get("busy_pct", 0.0))
    return float(stage.get("busy_s", 0.0)) * 100 / share if share else 0.0


def _weighted(values: Sequence[float], weights: Sequence[float]) -> float:
    total = sum(weights)
    if not total:
        return sum(values) / len(values) if values else 0.0
    return sum(v * w for v, w in zip(values, weights, strict=True)) / total


def _merge_hosts(
    host_sets: Sequence[Mapping[str, Mapping[str, Any]]],
) -> dict[str, dict[str, Any]]:
    latest: dict[str, tuple[int, Mapping[str, Any]]] = {}  # host -> (rank, settings)
    for hosts in host_sets:  # in the order the processes ended: the last one's settings win
        for rank, (host, settings) in enumerate(hosts.items()):
            latest[host] = (rank, settings)
    ordered = sorted(
        latest.items(), key=lambda item: (-int(item[1][1].get("in_flight", 0)), item[1][0])
    )
    return {host: dict(settings) for host, (_, settings) in ordered[:MAX_HOSTS]}
