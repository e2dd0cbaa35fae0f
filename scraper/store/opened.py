"""`async with` for what a backend opens (its database, the backend itself): open on the way in,
close on the way out, and close what was half opened when opening fails."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Opened:
    """A subclass says how to `open` and `close`; `close` must undo any part of `open`."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
