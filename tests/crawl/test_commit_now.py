"""The dispatcher's word to the sink: commit now, told once per change."""

from __future__ import annotations

import asyncio
from typing import Any

from scraper.crawl.commit_now import FLUSH, CommitNow


async def test_becoming_eager_asks_for_one_commit_and_staying_so_asks_no_more() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue(4)
    commit_now = CommitNow(queue)
    commit_now.want(False)
    assert queue.empty() and not commit_now.eager
    commit_now.want(True)
    commit_now.want(True)
    assert commit_now.eager and queue.qsize() == 1 and queue.get_nowait() is FLUSH
    commit_now.want(False)
    assert not commit_now.eager and queue.empty()
    commit_now.want(True)
    assert queue.get_nowait() is FLUSH


async def test_a_full_queue_is_not_added_to_the_sink_sees_eager_after_the_next_record() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue(1)
    queue.put_nowait("a record")
    commit_now = CommitNow(queue)
    commit_now.want(True)  # (put_nowait would raise QueueFull: the dispatcher must not block)
    assert commit_now.eager and queue.qsize() == 1


def test_with_no_sink_it_only_keeps_the_state() -> None:
    commit_now = CommitNow()
    commit_now.want(True)
    assert commit_now.eager
