"""Files the commands write (`--out`): created whole or not at all, with one clear error."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from scraper.errors import OutputError


@contextlib.contextmanager
def output_file(path: Path | None, stdout: TextIO) -> Iterator[TextIO]:
    """`stdout`, or a new file at `path`: written under a temporary name and renamed when the
    block succeeds, so a failed or interrupted export leaves no half-written file behind."""
    if path is None:
        yield stdout
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise OutputError(f"--out {path}: cannot write there: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # as a plain open() would have made it
        with open(fd, "w", encoding="utf-8", newline="") as f:
            yield f
        os.replace(temporary, path)
    except OSError as exc:
        raise OutputError(f"--out {path}: cannot write there: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
