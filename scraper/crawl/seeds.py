"""Seeds: the crawl's start URLs, from the config (`crawl.seeds`) or from a file, streamed.

A file (`crawl.seeds_file`, `scraper crawl --seeds-file FILE`; "-" is standard input) holds one
URL a line; blank lines and lines starting with `#` are skipped. It is read twice, a batch of
lines at a time, never whole: once to count and digest the good seeds (the digest names the
seed list in the crawls table, so a crawl of the same list resumes), and once to add them to the
frontier. Standard input is copied to a temporary file on the first pass. So a million seeds
take no more memory than ten. A line that is not an http(s) URL is counted and skipped, and the
first few are shown: one bad line does not stop a crawl of a million.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from scraper.errors import ConfigError
from scraper.models import CrawlRequest, SeedList
from scraper.urls import UrlPolicy, canonicalize

BATCH = 10_000  # seeds read, checked and inserted at a time
SAMPLE = 10  # seeds kept in the crawls table (its `seeds` column) for a list from a file
BAD_SHOWN = 5


def digest_of(seeds: Sequence[str]) -> SeedList:
    """The SeedList of seeds given in the config (already canonical)."""
    hasher = hashlib.sha256()
    for url in seeds:
        hasher.update(url.encode() + b"\n")
    # The whole list is the sample: it is in the config, small, and rows of crawls recorded
    # before digests were are matched on it.
    return SeedList(f"sha256:{hasher.hexdigest()}", len(seeds), tuple(seeds))


class SeedFile:
    """A seeds file, read a batch at a time (`scan` first, then `batches`)."""

    def __init__(self, name: str, policy: UrlPolicy) -> None:
        self._name = name
        self._policy = policy
        self._spool: Path | None = None  # standard input, copied here by the first pass

    @property
    def path(self) -> Path:
        return self._spool or Path(self._name)

    async def scan(self) -> SeedList:
        """Count and digest the seeds (in a thread: the file may be large, or a pipe)."""
        return await asyncio.to_thread(self._scan)

    def _scan(self) -> SeedList:
        if self._name == "-":
            fd, spool = tempfile.mkstemp(prefix="scraper-seeds-", suffix=".txt")
            self._spool = Path(spool)
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(sys.stdin.buffer, out)
        hasher = hashlib.sha256()
        count = bad = 0
        sample: list[str] = []
        shown: list[str] = []
        for number, line, url in self._lines():
            if url is None:
                bad += 1
                if len(shown) < BAD_SHOWN:
                    shown.append(f"line {number}: {line[:200]!r} is not an http(s) URL")
                continue
            count += 1
            hasher.update(url.encode() + b"\n")
            if len(sample) < SAMPLE:
                sample.append(url)
        return SeedList(f"sha256:{hasher.hexdigest()}", count, tuple(sample), bad, tuple(shown))

    async def batches(self) -> AsyncIterator[list[CrawlRequest]]:
        """The good seeds, BATCH at a time, each batch read in a thread."""
        lines = self._lines()
        while True:
            batch = await asyncio.to_thread(_take, lines, BATCH)
            if not batch:
                return
            yield batch

    def _lines(self) -> Iterator[tuple[int, str, str | None]]:
        """(line number, line, its canonical URL or None) of each line that is not blank or a
        comment."""
        try:
            handle = self.path.open("rb")
        except OSError as exc:
            raise ConfigError(
                f"crawl.seeds_file = {self._name!r}: cannot read: {exc.strerror}"
            ) from None
        with handle, io.TextIOWrapper(handle, encoding="utf-8", errors="replace") as text:
            for number, raw in enumerate(text, start=1):
                line = raw.strip()
                if not line or line.startswith("#"):
                    continue
                url = canonicalize(line, policy=self._policy) if "://" in line else None
                yield number, line, url

    async def close(self) -> None:
        """Remove the copy of standard input, if one was made."""
        if self._spool is not None:
            await asyncio.to_thread(self._spool.unlink, missing_ok=True)
            self._spool = None


def _take(lines: Iterator[tuple[int, str, str | None]], size: int) -> list[CrawlRequest]:
    batch: list[CrawlRequest] = []
    for _, _, url in lines:
        if url is not None:
            batch.append(CrawlRequest(url=url))
            if len(batch) >= size:
                break
    return batch
