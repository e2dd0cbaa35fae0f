"""The dispatcher's word to the sink: commit now.

The sink commits in batches (storage.batch_size, or storage.flush_interval), which is what
makes writing cheap. But a worker may idle while the only work that could come to it is in links
of pages not yet committed: then each record is worth committing as it comes. The dispatcher says
when (`Scheduler`: a worker idles, nothing may start, and a host with room has pages unstored);
the sink reads `eager` after each record it takes and, told so, commits what it holds at once.

Built before both, and given to both, so neither needs the other to be built.
"""

from __future__ import annotations

import asyncio
from typing import Any

FLUSH = object()  # put on the sink's queue to ask for a commit now


class CommitNow:
    """Whether the sink commits each record as it comes (`eager`) or in batches."""

    __slots__ = ("_queue", "eager")

    def __init__(self, queue: asyncio.Queue[Any] | None = None) -> None:
        self.eager = False
        self._queue = queue  # the sink's (None: no sink to tell)

    def want(self, eager: bool) -> None:
        """Eager (a worker waits on what is not committed) or not; becoming eager, the sink
        commits what it holds now."""
        if eager == self.eager:
            return
        self.eager = eager
        queue = self._queue
        if eager and queue is not None and not queue.full():
            queue.put_nowait(FLUSH)
