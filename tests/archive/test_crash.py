"""The archive under the crawl's worst days: kill -9 and resume, a full disk, a bad folder, and
two processes of a fleet on PostgreSQL, each writing files of its own."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web
from warcio.archiveiterator import ArchiveIterator

from helpers import base_url, rows
from scraper.demosite import STATE, SiteSpec, make_app

pytestmark = pytest.mark.timeout(240)
SCRAPER = [sys.executable, "-m", "scraper"]
WARCIO = str(Path(sys.executable).with_name("warcio"))
SPEC = SiteSpec(pages=120, page_bytes=3000, latency=0.01, extras=False, seed=7)
OPTIONS = ["--set", "storage.batch_size=7", "--set", "fetch.retry_backoff=0.01",
           "--concurrency", "8", "-q"]  # fmt: skip


async def serve(aiohttp_server: Any, spec: SiteSpec, hits: int = 0) -> tuple[Any, asyncio.Event]:
    reached = asyncio.Event()

    @web.middleware
    async def notice(request: web.Request, handler: Any) -> web.StreamResponse:
        response = await handler(request)
        if hits and sum(request.app[STATE].hits.values()) >= hits:
            reached.set()
        return response

    app = make_app(spec)
    app.middlewares.append(notice)
    return await aiohttp_server(app), reached


async def start(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *SCRAPER, *args, *OPTIONS, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str]:
    _, err = await asyncio.wait_for(process.communicate(), 150)
    assert process.returncode is not None
    return process.returncode, err.decode()


def files_valid(folder: Path) -> list[Path]:
    """Every file of the folder passes `warcio check`, and none is left `.open`."""
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    assert files and all(p.name.endswith(".warc.gz") for p in files), files
    checked = subprocess.run([WARCIO, "check", *map(str, files)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return files


def archived_whole(folder: Path, pages: list[tuple[Any, ...]]) -> None:
    """Each stored page's row names a whole response record of its URL."""
    for url, file, offset, length in pages:
        assert file is not None, url
        with (folder / file).open("rb") as stream:
            stream.seek(offset)
            member = stream.read(length)
        record = next(iter(ArchiveIterator(io.BytesIO(member))))
        assert record.rec_type == "response"
        assert record.rec_headers.get_header("WARC-Target-URI") == url
        assert record.raw_stream.read() is not None


PAGES = "SELECT url, warc_file, warc_offset, warc_length FROM pages ORDER BY url"


@pytest.mark.parametrize("after_hits", [10, 60])
async def test_kill_9_then_resume_every_file_valid_every_page_archived(
    aiohttp_server: Any, tmp_path: Path, after_hits: int
) -> None:
    server, reached = await serve(aiohttp_server, SPEC, after_hits)
    root, db, warc = base_url(server), tmp_path / "crawl.db", tmp_path / "warc"
    args = ("crawl", root, "--db", str(db), "--warc", str(warc))
    process = await start(*args, cwd=tmp_path)
    await asyncio.wait_for(reached.wait(), 60)
    process.kill()
    await asyncio.wait_for(process.communicate(), 10)
    code, err = await finish(await start(*args, cwd=tmp_path))
    assert code == 0, err
    stored = await rows(db, PAGES)
    expected = sorted(root + path.lstrip("/") for path in SPEC.reachable())
    assert [url for url, *_ in stored] == expected
    await asyncio.to_thread(files_valid, warc)
    await asyncio.to_thread(archived_whole, warc, stored)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB filesystem (tmpfs), to run out of space for real. Needs root."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_stops_the_crawl_with_nothing_stored_unarchived(
    aiohttp_server: Any, tmp_path: Path, tiny_disk: Path
) -> None:
    spec = SiteSpec(pages=300, page_bytes=8000, extras=False, seed=3)
    server, _ = await serve(aiohttp_server, spec)
    db = tmp_path / "crawl.db"
    args = ("crawl", base_url(server), "--db", str(db), "--warc", str(tiny_disk))
    code, err = await finish(await start(*args, cwd=tmp_path))
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("scraper: error: storage.warc = ") and "disk is full" in last, err
    assert "Traceback" not in err
    stored = await rows(db, PAGES)
    assert 0 < len(stored) < len(spec.reachable())
    await asyncio.to_thread(files_valid, tiny_disk)
    await asyncio.to_thread(archived_whole, tiny_disk, stored)


@pytest.mark.parametrize("where", ["a-file/warc", "/proc/warc"])
async def test_a_folder_that_cannot_be_written_is_one_clear_error(
    aiohttp_server: Any, tmp_path: Path, where: str
) -> None:
    await asyncio.to_thread((tmp_path / "a-file").write_text, "not a folder")
    server, _ = await serve(aiohttp_server, SiteSpec(pages=3, extras=False))
    args = ("crawl", base_url(server), "--db", str(tmp_path / "crawl.db"), "--warc", where)
    code, err = await finish(await start(*args, cwd=tmp_path))
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("scraper: error: storage.warc = "), err
    assert "Traceback" not in err
    assert await rows(tmp_path / "crawl.db", "SELECT count(*) FROM pages") == [(0,)]


HOSTS = [f"127.0.0.{n}" for n in range(2, 6)]


@pytest.fixture
async def hosts() -> AsyncIterator[list[str]]:
    """The demo site on four hosts (one app, one listener each), so that two processes of a
    fleet each get hosts of their own."""
    app = make_app(SiteSpec(pages=25, page_bytes=2000, links_per_page=6, extras=False, seed=9))
    runner = web.AppRunner(app)
    await runner.setup()
    roots = []
    for host in HOSTS:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        roots.append(f"http://{host}:{port}/")
    try:
        yield roots
    finally:
        await runner.cleanup()


async def test_two_processes_on_postgresql_write_files_of_their_own(
    hosts: list[str], pg_url: str, tmp_path: Path
) -> None:
    warc = tmp_path / "warc"
    args = ("crawl", *hosts, "--db", pg_url, "--workers", "2", "--warc", str(warc))
    code, err = await finish(await start(*args, "--set", "crawl.sitemaps=false", cwd=tmp_path))
    assert code == 0, err
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        stored = await (await conn.execute(PAGES)).fetchall()
    assert len(stored) == 4 * len(SiteSpec(pages=25, extras=False).reachable())
    files = await asyncio.to_thread(files_valid, warc)
    writers = {name.rsplit("-", 2)[1] for name in (p.name for p in files)}  # their pids
    assert len(writers) == 2, files
    await asyncio.to_thread(archived_whole, warc, stored)
