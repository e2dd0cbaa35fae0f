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
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, not {interval}")
        self.interval = interval
        self.stall_ms = stall_ms
        self._on_stall = on_stall
        self._histogram = LagHistogram()
        self._stalls = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.record((loop.time() - asked) * 1000)

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
