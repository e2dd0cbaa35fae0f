"""The WARC files of a storage.warc folder: named, locked, appended to, rotated, repaired.

Run in the archive's writer process (`writer.py`), never on the event loop: it does plain,
blocking file I/O.

- A file is named `scraper-<UTC time>-<host>-<pid>-<serial>.warc.gz`: several processes, and
  several machines sharing a folder, never pick the same name. While written it ends in `.open`;
  closed, it is renamed to its final name (the one the database records).
- Its writer holds an exclusive `flock` on it for as long as it is open; the kernel drops the
  lock when the process dies, kill -9 included. So a `.open` file nobody holds is torn: the next
  writer to open the folder (`repair`) cuts it back to its last whole gzip member (each record is
  one member, written by one `write`) and gives it its final name, or removes it when not even its
  warcinfo record is whole. A file is made under a hidden name and locked before it is renamed to
  `.open`, so `repair` never takes a file its writer has not locked yet.
- Each append is one `write` of whole members; one that fails (a full disk) is cut off again, so
  the file never ends in a torn record while its writer lives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from scraper.archive.records import warcinfo

SUFFIX = ".warc.gz"
OPEN = ".open"
PREFIX = "scraper"
SCAN_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FolderSettings:
    """What a writer process needs to open a folder (picklable: sent with each call)."""

    folder: str
    max_size: int
    redact_auth: bool = True  # storage.warc_redact_auth
    software: str = "scraper"


class WarcFolder:
    """The file this process is writing in a folder, and the repair of the others' torn files."""

    def __init__(self, settings: FolderSettings) -> None:
        self.settings = settings
        self._folder = Path(settings.folder)
        self._host = _safe(socket.gethostname()) or "host"
        self._serial = 0
        self._fd = -1
        self._name = ""  # the final name of the file open now
        self._size = 0

    def repair(self) -> list[str]:
        """Every torn `.open` file of the folder (its writer died), cut back to its last whole
        record and given its final name; the names of those kept."""
        repaired = []
        for path in sorted(self._folder.glob(f"*{SUFFIX}{OPEN}")):
            kept = _repair(path)
            if kept:
                repaired.append(kept)
        return repaired

    def append(self, members: list[bytes]) -> list[tuple[str, int, int]]:
        """Write the members, in order, in one write; each one's (file, offset, length)."""
        total = sum(len(member) for member in members)
        if self._fd < 0 or (self._size + total > self.settings.max_size and self._size > 0):
            self._rotate()
        start = self._size
        places = []
        offset = start
        for member in members:
            places.append((self._name, offset, len(member)))
            offset += len(member)
        self._write(b"".join(members))
        return places

    def close(self) -> None:
        """Close the file being written and give it its final name."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            os.fsync(fd)
            os.rename(self._folder / (self._name + OPEN), self._folder / self._name)
        finally:
            os.close(fd)  # (and with it the lock)

    def _rotate(self) -> None:
        self.close()
        self._serial += 1
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime()) + f"{time.time() % 1:.6f}"[2:]
        name = f"{PREFIX}-{stamp}-{self._host}-{os.getpid()}-{self._serial:05d}{SUFFIX}"
        hidden = self._folder / f".{name}.new"
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            info = warcinfo(name, {"software": self.settings.software, "format": "WARC 1.1"})
            _write_all(fd, info)
            os.rename(hidden, self._folder / (name + OPEN))
        except BaseException:
            os.close(fd)
            hidden.unlink(missing_ok=True)
            raise
        self._fd, self._name, self._size = fd, name, len(info)

    def _write(self, data: bytes) -> None:
        try:
            _write_all(self._fd, data)
        except OSError:
            # A full disk, say: the file must not end in a torn record while it is ours.
            with contextlib.suppress(OSError):  # (else the repair at the next start does)
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _repair(path: Path) -> str | None:
    """Cut a torn file back to its last whole member and close it; None if nothing of it is
    kept, or another process holds it (its writer, alive) or took it first."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None  # repaired and renamed by another process meanwhile
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None  # its writer is alive
            raise
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return None  # repaired by another process, and a new file took its name
        except FileNotFoundError:
            return None
        whole = whole_length(fd)
        final = path.with_name(path.name.removesuffix(OPEN))
        if whole == 0:
            path.unlink()
            return None
        os.ftruncate(fd, whole)
        os.fsync(fd)
        os.rename(path, final)
        return final.name
    finally:
        os.close(fd)


def whole_length(fd: int) -> int:
    """The length of the file's leading run of whole gzip members."""
    os.lseek(fd, 0, os.SEEK_SET)
    whole = offset = 0  # the end of the last whole member; where `data` starts in the file
    member = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = b""
    while True:
        if not data:
            data = os.read(fd, SCAN_CHUNK)
            if not data:
                return whole
        try:  # the output is not kept, and bounded: a member may inflate a thousandfold
            member.decompress(data, SCAN_CHUNK)
            while member.unconsumed_tail and not member.eof:
                member.decompress(member.unconsumed_tail, SCAN_CHUNK)
        except zlib.error:
            return whole  # garbage: nothing is whole after the last good member
        if member.eof:
            offset += len(data) - len(member.unused_data)
            whole, data = offset, member.unused_data
            member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            offset, data = offset + len(data), b""


def _safe(name: str) -> str:
    """A host name as a file name's part: letters, digits, dots and hyphens only."""
    return "".join(c if c.isalnum() or c in ".-" else "-" for c in name)[:64]
