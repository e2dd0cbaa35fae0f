"""The parse stage's worker processes: replies in order, errors carried back, deaths survived."""

from __future__ import annotations

import asyncio
import importlib
import os
import pickle
import random
import re
import signal
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from scraper.models import ParseJob, ParseResult
from scraper.parse.page import parse_pages
from scraper.parse.procpool import RING_BYTES, ProcessPool, WorkerDied, _Ring
from scraper.parse.procworker import each_within, within

# The functions run in the workers must be importable there: builtins and the standard library.


async def test_calls_run_in_other_processes_and_come_back_in_order() -> None:
    async with ProcessPool(2) as pool:
        assert len(set(pool.pids)) == 2 and os.getpid() not in pool.pids
        assert await asyncio.gather(*(pool.run(abs, -n) for n in range(50))) == list(range(50))
        big = b"x" * 3_000_000  # larger than any pipe buffer
        assert await pool.run(len, big) == len(big)
        assert await pool.run(print, "a stray print must not corrupt the replies") is None
        assert await pool.run(abs, -7) == 7


@pytest.fixture
def unimportable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[object], object]:
    """A function this process can pickle by name and the workers cannot import: its module is
    on this process's sys.path only."""
    (tmp_path / "only_in_the_parent.py").write_text("def noop(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("only_in_the_parent")
    return module.noop  # type: ignore[no-any-return]


async def test_an_exception_in_the_worker_is_raised_in_the_caller(
    unimportable: Callable[[object], object],
) -> None:
    async with ProcessPool(1) as pool:
        with pytest.raises(ValueError, match="bad input"):
            await pool.run(int, "bad input")
        with pytest.raises(ModuleNotFoundError):  # a function the worker cannot import
            await pool.run(unimportable, None)
        assert await pool.run(abs, -3) == 3  # and the worker goes on


async def test_a_dead_worker_fails_its_call_and_is_replaced() -> None:
    async with ProcessPool(2) as pool:
        first = list(pool.pids)
        with pytest.raises(WorkerDied, match="exited \\(code 3\\)"):
            await pool.run(os._exit, 3)
        assert await asyncio.gather(*(pool.run(abs, -n) for n in range(10))) == list(range(10))
        assert len(set(pool.pids) - set(first)) == 1  # one new process, one of the old ones
        victim = pool.pids[0]
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(0.2)
        assert await pool.run(abs, -4) == 4
        assert victim not in pool.pids


async def test_workers_ignore_ctrl_c_and_end_with_the_pool() -> None:
    async with ProcessPool(2) as pool:
        pids = list(pool.pids)
        for pid in pids:
            os.kill(pid, signal.SIGINT)  # what Ctrl-C sends the whole process group
        await asyncio.sleep(0.2)
        assert await asyncio.gather(pool.run(abs, -2), pool.run(abs, -3)) == [2, 3]
        assert pool.pids == pids
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


async def test_workers_share_the_crawlers_session_and_yield_it_the_cpu() -> None:
    """In the crawler's session (where the kernel groups CPU time by session, the crawl is one
    group), not in its process group (Ctrl-C is the crawler's), `nice` below the crawler."""
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    async with ProcessPool(2, nice=7) as pool:
        for pid in pool.pids:
            assert os.getsid(pid) == os.getsid(0)
            assert os.getpgid(pid) == pid != os.getpgid(0)
            assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, mine + 7)
    async with ProcessPool(1) as pool:
        assert os.getpriority(os.PRIO_PROCESS, pool.pids[0]) == mine


class TwoArguments(Exception):
    """Raised in a worker, it pickles but cannot be unpickled: its __init__ wants two values."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} {b}")


def raise_two(_: object) -> None:
    raise TwoArguments(1, 2)


@pytest.fixture
def importable_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let workers import this test module (they inherit the environment)."""
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__))


async def test_a_reply_that_cannot_be_read_kills_and_replaces_the_worker(importable_here) -> None:
    async with ProcessPool(1) as pool:
        old = pool.pids[0]
        with pytest.raises(WorkerDied, match="cannot be read"):
            await pool.run(raise_two, None)
        assert await pool.run(abs, -5) == 5
        assert pool.pids[0] != old and not psutil.pid_exists(old)


async def test_a_call_queued_behind_a_dying_one_fails_too() -> None:
    async with ProcessPool(1) as pool:
        dying = asyncio.create_task(pool.run(os._exit, 3))
        queued = asyncio.create_task(pool.run(abs, -1))
        for call in (dying, queued):
            with pytest.raises(WorkerDied):
                await call


async def test_closing_while_a_replacement_starts_leaks_no_process() -> None:
    pool = ProcessPool(1)
    await pool.__aenter__()
    with pytest.raises(WorkerDied):
        await pool.run(os._exit, 3)
    call = asyncio.create_task(pool.run(abs, -1))  # starts a replacement
    await asyncio.sleep(0)
    await pool.__aexit__(None, None, None)
    with pytest.raises(WorkerDied, match="closing"):
        await call
    await asyncio.sleep(0.2)
    assert await asyncio.to_thread(_workers_alive) == []


def _workers_alive() -> list[psutil.Process]:
    children = psutil.Process().children(recursive=True)
    return [p for p in children if "scraper.parse.procworker" in " ".join(p.cmdline())]


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        ProcessPool(0)


async def test_a_call_over_its_time_ends_its_worker_whatever_it_is_doing() -> None:
    """A regex backtracking in C code runs no Python signal handler: the CPU timer's default
    action ends the worker all the same. The call queued behind it never started, and says so;
    a new worker takes over."""
    spin = re.compile("(a+)+$").findall  # years on "a" * 40 + "b"
    async with ProcessPool(1) as pool:
        old = pool.pids[0]
        stuck = asyncio.ensure_future(pool.run(within, (0.5, spin, "a" * 40 + "b")))
        behind = asyncio.ensure_future(pool.run(within, (5.0, abs, -1)))
        with pytest.raises(WorkerDied, match="ran out of time") as first:
            await stuck
        assert first.value.timed_out and first.value.started
        with pytest.raises(WorkerDied) as second:
            await behind
        assert not second.value.timed_out and not second.value.started
        assert await pool.run(within, (5.0, spin, "aaa")) == ["aaa"]  # in time: its answer
        assert pool.pids[0] != old


def burn_cpu(seconds: list[float]) -> list[float]:
    """Spend `seconds[0]` of CPU time (as `each_within` calls it: with a list of one item)."""
    start = time.process_time()
    while time.process_time() - start < seconds[0]:
        pass
    return seconds


async def test_each_page_of_a_batch_gets_its_own_time(importable_here) -> None:
    async with ProcessPool(1) as pool:
        # Three calls of 0.3 s of CPU each, with 0.5 s each: over 0.5 s together, each within.
        assert await pool.run(each_within, (0.5, burn_cpu, [0.3, 0.3, 0.3])) == [0.3, 0.3, 0.3]


async def test_big_bytes_go_through_the_shared_ring_and_come_back_intact() -> None:
    """Out-of-band buffers (a page's body) travel through each worker's shared-memory ring; more
    than the ring holds at once falls back to the pipe. Whatever the path, each call sees its
    own bytes: none is overwritten before its worker copied it out."""
    rng = random.Random(4)
    blobs = [rng.randbytes(rng.choice([10, 700_000, 2_500_000, RING_BYTES + 1])) for _ in range(40)]
    async with ProcessPool(2) as pool:
        calls = [pool.run(zlib.crc32, pickle.PickleBuffer(blob)) for blob in blobs]
        assert await asyncio.gather(*calls) == [zlib.crc32(blob) for blob in blobs]
        job = ParseJob(
            url="http://a.example/", body=b"<title>t</title>" * 100_000, content_type=None
        )
        (result,) = await pool.run(parse_pages, [job])
        assert isinstance(result, ParseResult) and result.title == "t"


def test_the_ring_gives_space_in_call_order_and_takes_it_back_in_reply_order() -> None:
    ring = _Ring(100)
    try:
        assert ring.take(60) == 0
        assert ring.take(30) == 60
        assert ring.take(20) is None  # 10 left at the end, and the start is held
        ring.give_back()  # [0, 60) is free again
        assert ring.take(20) == 0  # wraps
        assert ring.take(45) is None  # only [20, 60) between the newest and the oldest
        assert ring.take(40) == 20
        ring.give_back()
        ring.give_back()  # only [20, 60) is held
        assert ring.take(10) == 0  # it wraps as soon as the start has room: it stays compact
        ring.give_back()
        ring.give_back()
        assert ring.take(100) == 0  # nothing held: from the start, the whole ring
        assert ring.take(1) is None
    finally:
        ring.close()
