"""The WARC files of a folder: names, rotation, the repair of torn files, a full disk."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from warcio.archiveiterator import ArchiveIterator

from scraper.archive.folder import OPEN, FolderSettings, WarcFolder, whole_length
from scraper.archive.records import exchange_members
from scraper.models import Exchange

WARCIO = str(Path(sys.executable).with_name("warcio"))


def exchange(body: bytes = b"hello", url: str = "http://127.0.0.1:1/x") -> Exchange:
    return Exchange(
        url=url,
        date="2026-12-08T01:02:03.456+00:00",
        ip="127.0.0.1",
        request_head=b"GET /x HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
        response_head=b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n",
        body=body,
    )


def members(body: bytes = b"hello") -> list[bytes]:
    return [member.data for member in exchange_members(exchange(body))]


def check(*paths: Path) -> None:
    result = subprocess.run([WARCIO, "check", *map(str, paths)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_file_is_open_while_written_then_takes_its_final_name(tmp_path: Path) -> None:
    folder = WarcFolder(FolderSettings(str(tmp_path), 10_000_000))
    ((name, offset, _), _) = folder.append(members())
    assert [p.name for p in tmp_path.iterdir()] == [name + OPEN]
    assert name.startswith("scraper-") and name.endswith(f"-{os.getpid()}-00001.warc.gz")
    folder.close()
    assert [p.name for p in tmp_path.iterdir()] == [name]
    check(tmp_path / name)
    with (tmp_path / name).open("rb") as stream:
        stream.seek(offset)
        record = next(iter(ArchiveIterator(stream)))
        assert record.rec_type == "response" and record.raw_stream.read() == b"hello"


def test_files_rotate_at_the_maximum_size(tmp_path: Path) -> None:
    folder = WarcFolder(FolderSettings(str(tmp_path), 3000))
    body = os.urandom(1000)  # incompressible: each exchange is over 1 KB of members
    places = [folder.append(members(body)) for _ in range(6)]
    folder.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) >= 3 and all(p.stat().st_size <= 3000 for p in files)
    assert {place[0] for pair in places for place in pair} == {p.name for p in files}
    check(*files)
    big = WarcFolder(FolderSettings(str(tmp_path / "big"), 100))
    (tmp_path / "big").mkdir()
    big.append(members(body))  # a record over the limit has a file of its own
    big.close()
    check(*(tmp_path / "big").iterdir())


def test_a_torn_file_is_cut_back_to_its_last_whole_record(tmp_path: Path) -> None:
    folder = WarcFolder(FolderSettings(str(tmp_path), 10_000_000))
    whole = folder.append(members(b"first"))
    name = whole[0][0]
    torn = tmp_path / (name + OPEN)
    end = torn.stat().st_size
    with torn.open("ab") as stream:  # half a record: what a kill -9 mid-write leaves
        stream.write(members(b"second")[0][:40])
    # Its writer still holds it: no one else may touch it.
    assert WarcFolder(FolderSettings(str(tmp_path), 10_000_000)).repair() == []
    os.close(folder._fd)  # the writer dies (its lock goes with it), the file left open
    assert WarcFolder(FolderSettings(str(tmp_path), 10_000_000)).repair() == [name]
    assert (tmp_path / name).stat().st_size == end
    check(tmp_path / name)


def test_a_file_with_nothing_whole_is_removed(tmp_path: Path) -> None:
    torn = tmp_path / f"scraper-x-{uuid.uuid4().hex}.warc.gz{OPEN}"
    torn.write_bytes(members()[0][:10])
    assert WarcFolder(FolderSettings(str(tmp_path), 1000)).repair() == []
    assert list(tmp_path.iterdir()) == []


def test_whole_length_stops_at_garbage(tmp_path: Path) -> None:
    path = tmp_path / "f"
    data = b"".join(members(os.urandom(200_000)))  # members larger than a read
    path.write_bytes(data + b"not gzip at all")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert whole_length(fd) == len(data)
    finally:
        os.close(fd)


@contextlib.contextmanager
def tiny_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_disk_raises_and_leaves_no_torn_record(tmp_path: Path) -> None:
    with tiny_disk(tmp_path / "disk", "64k") as disk:
        folder = WarcFolder(FolderSettings(str(disk), 10_000_000))
        written = 0
        with pytest.raises(OSError) as failed:
            for _ in range(100):
                folder.append(members(os.urandom(5000)))
                written += 1
        assert failed.value.errno == 28 and written > 3  # ENOSPC
        folder.close()
        check(*disk.iterdir())  # cut back after the failed write: every record whole
        assert not any(p.name.endswith(OPEN) for p in disk.iterdir())


def test_request_credentials_are_redacted_unless_asked_to_keep_them() -> None:
    secret = Exchange(
        url="http://127.0.0.1:1/x",
        date="2026-12-08T01:02:03.456+00:00",
        ip="127.0.0.1",
        request_head=(
            b"GET /x HTTP/1.1\r\nAuthorization: Basic dTpzZWNyZXQ=\r\nCookie: id=s3cret\r\n"
            b"Proxy-Authorization: Basic cHJveHk6cGFzcw==\r\nAccept: */*\r\n\r\n"
        ),
        response_head=b"HTTP/1.1 200 OK\r\n\r\n",
        body=b"",
    )

    def request_headers(redact: bool) -> dict[str, str]:
        _, request = exchange_members(secret, redact)
        record = next(iter(ArchiveIterator(io.BytesIO(request.data))))
        return dict(record.http_headers.headers)

    hidden = request_headers(True)
    assert hidden["Authorization"] == hidden["Cookie"] == "[redacted]"
    assert hidden["Proxy-Authorization"] == "[redacted]" and hidden["Accept"] == "*/*"
    kept = request_headers(False)
    assert (kept["Authorization"], kept["Cookie"]) == ("Basic dTpzZWNyZXQ=", "id=s3cret")
    assert kept["Proxy-Authorization"] == "[redacted]"  # never the site's business
