"""Where the time of a crawl on several processes goes: a timeline, second by second, of each
worker's requests done, hosts held and requests in flight (`make bench-scale`'s `--timeline`).

Nothing in the crawlers is asked: the harness samples the `hosts` table (who holds which host,
every quarter second) and joins it with its server's log of every request (host, arrival, end),
so the figures are the same whatever the crawler does. A request counts for the worker that
held its host when it arrived.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass, field

import psycopg

SAMPLE_EVERY = 0.25  # seconds between two looks at the hosts table

LEASED = """
SELECT host, owner FROM hosts WHERE owner IS NOT NULL AND lease_until > now()
"""

Request = tuple[str, str, float, float]  # (host, path, arrived, left): the server's log


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # time.monotonic(), the server log's clock
    owners: dict[str, str]  # host -> the worker holding it


async def sample_leases(url: str, samples: list[Sample]) -> None:
    """Append who holds which host to `samples` every SAMPLE_EVERY seconds, until cancelled."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            try:
                cursor = await conn.execute(LEASED)
            except psycopg.errors.UndefinedTable:
                pass  # the crawl has not made its tables yet
            else:
                rows = await cursor.fetchall()
                samples.append(Sample(time.monotonic(), {str(h): str(o) for h, o in rows}))
            await asyncio.sleep(SAMPLE_EVERY)


@dataclass
class Second:
    """One second of the run, from its first request."""

    at: int
    done: int = 0  # requests that ended in this second, all workers
    active_hosts: int = 0  # hosts with a request in this second or later
    per_worker: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    # worker -> (requests ended, hosts held, requests in flight: means over the samples)


@dataclass
class Timeline:
    seconds: list[Second]
    workers: list[str]  # w1, w2, ... in the order of their first claim
    first_request: dict[str, float]  # worker -> seconds from the run's first request
    last_request: dict[str, float]

    def table(self) -> str:
        """One line a second: `t  done  hosts | w1 done/held/in flight | w2 ...`."""
        head = "   t  done  hosts  " + "  ".join(f"{w:>14}" for w in self.workers)
        legend = "  ".join(f"{'done/held/fly':>14}" for _ in self.workers)
        lines = [head, " " * 19 + legend]
        for second in self.seconds:
            cells = []
            for worker in self.workers:
                done, held, flying = second.per_worker.get(worker, (0, 0.0, 0.0))
                cells.append(f"{done:>5}/{held:>3.0f}/{flying:>4.1f}")
            lines.append(
                f"{second.at:>4}  {second.done:>4}  {second.active_hosts:>5}  " + "  ".join(cells)
            )
        starts = ", ".join(
            f"{w} {self.first_request[w]:.2f}–{self.last_request[w]:.2f} s" for w in self.workers
        )
        lines.append(f"each worker's first and last request: {starts}")
        return "\n".join(lines)


def build(samples: list[Sample], log: list[Request]) -> Timeline:
    """The timeline of a run from its lease samples and its server's log."""
    requests = sorted((r for r in log if r[1] != "/robots.txt"), key=lambda r: r[2])
    if not requests or not samples:
        return Timeline([], [], {}, {})
    names = _worker_names(samples)
    times = [s.at for s in samples]

    def owner(host: str, at: float) -> str | None:
        index = bisect.bisect_right(times, at) - 1
        holder = samples[max(0, index)].owners.get(host)
        return names.get(holder) if holder is not None else None

    t0 = requests[0][2]
    length = int(max(r[3] for r in requests) - t0) + 1
    seconds = [Second(at=n) for n in range(length)]
    last_of_host: dict[str, float] = {}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    ended: dict[tuple[int, str], int] = {}
    for host, _, arrived, left in requests:
        last_of_host[host] = max(last_of_host.get(host, 0.0), left)
        worker = owner(host, arrived) or "?"
        first.setdefault(worker, arrived - t0)
        last[worker] = max(last.get(worker, 0.0), left - t0)
        bucket = int(left - t0)
        seconds[bucket].done += 1
        ended[bucket, worker] = ended.get((bucket, worker), 0) + 1
    for second in seconds:
        second.active_hosts = sum(1 for end in last_of_host.values() if end - t0 >= second.at)
    held, flying = _held_and_flying(samples, requests, names, t0, length)
    workers = sorted(set(names.values()) | set(first), key=_worker_order)
    for second in seconds:
        for worker in workers:
            counts = held.get((second.at, worker), [])
            in_air = flying.get((second.at, worker), [])
            second.per_worker[worker] = (
                ended.get((second.at, worker), 0),
                sum(counts) / len(counts) if counts else 0.0,
                sum(in_air) / len(in_air) if in_air else 0.0,
            )
    return Timeline(seconds, workers, first, last)


def _worker_names(samples: list[Sample]) -> dict[str, str]:
    """Each owner's short name, w1 the first seen holding a host."""
    names: dict[str, str] = {}
    for sample in samples:
        for holder in sorted(set(sample.owners.values())):
            if holder not in names:
                names[holder] = f"w{len(names) + 1}"
    return names


def _worker_order(name: str) -> tuple[int, str]:
    return (int(name[1:]), name) if name[1:].isdigit() else (1 << 30, name)


def _held_and_flying(
    samples: list[Sample], requests: list[Request], names: dict[str, str], t0: float, length: int
) -> tuple[dict[tuple[int, str], list[int]], dict[tuple[int, str], list[int]]]:
    """Per (second, worker): the hosts held and the requests in flight at each sample."""
    held: dict[tuple[int, str], list[int]] = {}
    flying: dict[tuple[int, str], list[int]] = {}
    arrivals = [r[2] for r in requests]
    for sample in samples:
        second = int(sample.at - t0)
        if not 0 <= second < length:
            continue
        per_worker: dict[str, int] = {}
        for holder in sample.owners.values():
            per_worker[names[holder]] = per_worker.get(names[holder], 0) + 1
        in_air: dict[str, int] = {}
        for host, _, _, left in requests[: bisect.bisect_right(arrivals, sample.at)]:
            if left > sample.at:
                worker = names.get(sample.owners.get(host, ""), "?")
                in_air[worker] = in_air.get(worker, 0) + 1
        for worker in set(names.values()):
            held.setdefault((second, worker), []).append(per_worker.get(worker, 0))
            flying.setdefault((second, worker), []).append(in_air.get(worker, 0))
    return held, flying
