"""The loop's side of the WARC archive: `Archive` hands exchanges to the writer process and
says where their records went.

The fetch stage writes robots.txt's and sitemaps' exchanges through it as they come; the pipeline
writes each batch's pages while the batch is parsed, and the sink stores where each page's
record went in the page's own transaction: so the database never points at a record that is not
whole in its file. A folder that cannot be written, or a disk that fills up, is an ArchiveError:
the crawl stops, and the pages of the batch it happened to are not stored (they are fetched again
when the crawl resumes).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from scraper.archive.folder import FolderSettings
from scraper.archive.writer import close_folder, open_folder, write_exchanges
from scraper.config import StorageConfig
from scraper.errors import ArchiveError
from scraper.models import Archived, Exchange
from scraper.parse.procpool import ProcessPool, WorkerDied

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")


class Archive:
    """The writer process of one crawl process, over `async with`."""

    def __init__(self, config: StorageConfig, software: str = "scraper") -> None:
        self._settings = FolderSettings(
            str(Path(config.warc).expanduser().absolute()),
            config.warc_max_size,
            redact_auth=config.warc_redact_auth,
            software=software,
        )
        self._pool = ProcessPool(1)
        self.repaired: list[str] = []  # torn files of dead writers, repaired at the start

    @property
    def folder(self) -> str:
        return self._settings.folder

    async def __aenter__(self) -> Self:
        await self._pool.__aenter__()
        try:
            await self._made_folder()
            self.repaired = await self._call(open_folder, self._settings)
        except BaseException as exc:
            await self._pool.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        for name in self.repaired:
            log.warning("WARC file %s was left torn by a process that died; cut back to its "
                        "last whole record", name)  # fmt: skip
        return self

    async def _made_folder(self) -> None:
        try:
            await self._pool.run(_make_folder, self._settings.folder)
        except OSError as exc:
            raise ArchiveError(self._explain(exc)) from exc

    async def write(self, exchanges: list[Exchange]) -> list[Archived]:
        """Write the exchanges' records; where each one's response (or revisit) record went."""
        if not exchanges:
            return []
        return await self._call(write_exchanges, (self._settings, exchanges))

    async def _call(self, function: Callable[[J], R], argument: J) -> R:
        try:
            return await self._pool.run(function, argument)
        except OSError as exc:
            raise ArchiveError(self._explain(exc)) from exc
        except WorkerDied as exc:
            where = f"storage.warc = {self._settings.folder!r}"
            raise ArchiveError(f"{where}: the WARC writer process died ({exc})") from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._pool.run(close_folder, self._settings)
        except (OSError, WorkerDied) as error:
            log.warning("the WARC file being written could not be closed (%s); the next crawl "
                        "on the folder repairs it", error)  # fmt: skip
        finally:
            await self._pool.__aexit__(exc_type, exc, tb)

    def _explain(self, exc: OSError) -> str:
        where = f"storage.warc = {self._settings.folder!r}"
        if exc.errno == errno.ENOSPC:
            return f"{where}: the disk is full; the crawl stopped (resume it once there is room)"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{where}: cannot write there ({exc.strerror})"
        return f"{where}: {exc.strerror or exc}"


def _make_folder(folder: str) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
