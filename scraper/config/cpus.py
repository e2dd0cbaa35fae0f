"""How many CPUs this process may use, and how many parse workers `parse.workers = "auto"` is."""

from __future__ import annotations

import functools
import os
from pathlib import Path


@functools.cache  # read once per process: config objects are built inside coroutines too
def usable_cpus(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The CPUs this process may use, not all the machine has: those it may run on (taskset,
    cgroup cpusets), and no more than its cgroup's CPU quota (a container's `--cpus`)."""
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0)) or 1
    else:
        cpus = os.cpu_count() or 1
    try:
        quota = quota_cpus(cpu_max.read_text())
    except OSError:
        quota = None  # no cgroup v2 here, or not readable: no quota we can see
    return min(cpus, quota) if quota else cpus


def quota_cpus(cpu_max: str) -> int | None:
    """CPUs allowed by a cgroup v2 `cpu.max` ("200000 100000": 2; "150000 100000": 2, rounded
    up; "max 100000": no quota, None)."""
    fields = cpu_max.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return max(1, -(-quota // period)) if quota > 0 and period > 0 else None


def auto_workers(cpus: int) -> int:
    """`parse.workers = "auto"`: the CPUs minus what the event loop needs.

    At full speed the loop takes about a third of the crawl's CPU (docs/benchmarks.md): up to a
    core of its own. With three CPUs or more, one is left to it, so the workers never crowd it
    out; with one or two, a worker per CPU is faster (two workers and the loop on two CPUs:
    1655 pages/s against 1470 with one worker), the loop taking its share of both."""
    return cpus - 1 if cpus >= 3 else max(cpus, 1)
