"""Event-loop health: how late does the loop wake a task that asked to sleep a fixed interval?

Everything in the crawler shares one event loop, so any callback that runs too long (a big JSON
dump, a synchronous write, parsing on the loop thread) delays every socket at once. `LoopLagMonitor`
makes that visible: its task sleeps `interval` seconds again and again and records how much later
than asked it woke. The lags go into a log-scale histogram, so memory stays fixed however long the
crawl runs, and percentiles are exact to within `RESOLUTION` (relative).

Use it as a task the caller owns::

    monitor = LoopLagMonitor()
    async with asyncio.TaskGroup() as tg:
        watch = tg.create_task(monitor.run(), name="loop-lag")
        ...                      # the work being watched
        watch.cancel()
    monitor.stats().as_json()    # {"p50": ..., "p99": ..., "max": ..., "samples": ...} in ms
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

RESOLUTION = 0.05  # bucket width, relative: a reported percentile is within 5% of the true lag
SMALLEST_MS = 0.01  # lags below this (10 µs) share the first bucket: they are noise


@dataclass(frozen=True, slots=True)
class LagStats:
    """Loop lag percentiles in milliseconds (0.0 when nothing was measured)."""

    p50: float
    p99: float
    max: float
    samples: int
    stalls: int  # wakes later than the monitor's stall threshold

    def as_json(self) -> dict[str, float | int]:
        """The shape the crawl's `counters` JSON keeps under `loop_lag_ms`."""
        return {
            "p50": round(self.p50, 3),
            "p99": round(self.p99, 3),
            "max": round(self.max, 3),
            "samples": self.samples,
            "stalls": self.stalls,
        }


class LagHistogram:
    """Counts of lags in log-spaced buckets: fixed memory, percentiles to ±RESOLUTION."""

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self.samples = 0
        self.max_ms = 0.0

    def add(self, lag_ms: float) -> None:
        lag_ms = max(lag_ms, 0.0)  # a clock read just before the deadline can look early
        bucket = _bucket(lag_ms)
        self._counts[bucket] = self._counts.get(bucket, 0) + 1
        self.samples += 1
        self.max_ms = max(self.max_ms, lag_ms)

    def percentile(self, q: float) -> float:
        """The lag (ms) that `q`% of samples do not exceed, as its bucket's upper bound."""
        if not self.samples:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.samples))
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                return min(_upper_bound(bucket), self.max_ms)
        return self.max_ms


def _bucket(lag_ms: float) -> int:
    if lag_ms <= SMALLEST_MS:
        return 0
    return 1 + int(math.log(lag_ms / SMALLEST_MS) / math.log1p(RESOLUTION))


def _upper_bound(bucket: int) -> float:
    return SMALLEST_MS * (1 + RESOLUTION) ** bucket


class LoopLagMonitor:
    """Measures the running loop's lag until its `run()` task is cancelled.

    `interval` trades resolution for overhead: 20 wake-ups a second cost nothing measurable, and a
    stall shorter than the interval is still seen in full, because the sleep that spans it wakes
    late by the whole stall. `on_stall(lag_ms)` is called (on the loop) for each wake later than
    `stall_ms`, so a caller can log which stage was busy.
    """

    def __init__(
        self,
        interval: float = 0.05,
        stall_ms: float = 100.0,
        on_stall: Callable[[float], None] | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, not {interval}")
        self.interval = interval
        self.stall_ms = stall_ms
        self._on_stall = on_stall
        self._on_tick = on_tick  # called at each wake: a clock for sampling other gauges
        self._histogram = LagHistogram()
        self._stalls = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.record((loop.time() - asked) * 1000)
            if self._on_tick is not None:
                self._on_tick()

    def record(self, lag_ms: float) -> None:
        self._histogram.add(lag_ms)
        if lag_ms > self.stall_ms:
            self._stalls += 1
            if self._on_stall is not None:
                self._on_stall(lag_ms)

    def stats(self) -> LagStats:
        h = self._histogram
        return LagStats(
            p50=h.percentile(50),
            p99=h.percentile(99),
            max=h.max_ms,
            samples=h.samples,
            stalls=self._stalls,
        )


@dataclass(frozen=True, slots=True)
class StageGauge:
    """One stage at one instant: how much of its capacity is in use (0 to 1), and how many items
    wait in the queue in front of it."""

    load: float
    queued: int


class StageSampler:
    """Where the pipeline's time goes, from gauges sampled at a fixed interval (the lag
    monitor's wake-ups): per stage, the share of samples it was busy (load > 0), its mean load,
    and its queue's mean and largest depth. Sampling costs nothing per page, and over a crawl of
    seconds its hundreds of samples say which stage is the bottleneck: the one near 100%."""

    def __init__(self) -> None:
        self._samples = 0
        self._first = self._last = 0.0
        self._busy: dict[str, int] = {}
        self._load: dict[str, float] = {}
        self._queued: dict[str, int] = {}
        self._queue_max: dict[str, int] = {}

    def add(self, gauges: dict[str, StageGauge], now: float) -> None:
        if not self._samples:
            self._first = now
        self._last = now
        self._samples += 1
        for name, gauge in gauges.items():
            self._busy[name] = self._busy.get(name, 0) + (gauge.load > 0)
            self._load[name] = self._load.get(name, 0.0) + gauge.load
            self._queued[name] = self._queued.get(name, 0) + gauge.queued
            self._queue_max[name] = max(self._queue_max.get(name, 0), gauge.queued)

    def as_json(self) -> dict[str, dict[str, float | int]]:
        """The shape the crawl's `counters` keeps under `stages`; busy_s is the busy share of the
        time the samples span, span_s that time (what a fleet's merge weighs each process's
        figures by: store/fleet_health.py)."""
        n = self._samples
        if not n:
            return {}
        span = self._last - self._first
        return {
            name: {
                "busy_s": round(self._busy[name] / n * span, 2),
                "busy_pct": round(self._busy[name] / n * 100, 1),
                "load_pct": round(self._load[name] / n * 100, 1),
                "queue_mean": round(self._queued[name] / n, 1),
                "queue_max": self._queue_max[name],
                "span_s": round(span, 2),
            }
            for name in self._busy
        }
