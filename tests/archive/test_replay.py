"""A crawl's archive replays in pywb, from the CDXJ index `scraper export` writes: the guide's
recipe (docs/guides/archiving.md), run for real on loopback."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from helpers import crawl
from scraper.results.export import export

WAYBACK = Path(__file__).parents[2] / ".venv-replay" / "bin" / "wayback"
PLAIN = b"<html><title>plain</title><a href='/zipped'>on</a> a plain page"
ZIPPED = b"<html><title>zipped</title> a page sent gzip-encoded"

pytestmark = pytest.mark.timeout(120)


def site() -> web.Application:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(body=PLAIN, content_type="text/html")

    async def zipped(request: web.Request) -> web.Response:
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/html"}
        return web.Response(body=gzip.compress(ZIPPED), headers=headers)

    app = web.Application()
    app.router.add_get("/", plain)
    app.router.add_get("/zipped", zipped)
    return app


def collection(root: Path, warc: Path, db: str) -> None:
    """pywb's layout: collections/NAME/archive (the WARC files), indexes/index.cdxj (ours)."""
    archive, indexes = (
        root / "collections" / "crawl" / "archive",
        root / "collections" / "crawl" / "indexes",
    )
    archive.mkdir(parents=True)
    indexes.mkdir()
    for path in warc.iterdir():
        shutil.copy(path, archive / path.name)
    with (indexes / "index.cdxj").open("w") as out:
        export(db, out, "cdxj")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_pywb_replays_the_pages_from_our_index(
    aiohttp_server: Any, make_config: Any, tmp_path: Path
) -> None:
    if not await asyncio.to_thread(WAYBACK.exists):
        pytest.skip("pywb is not installed: make test installs it in .venv-replay")
    server = await aiohttp_server(site())
    base = str(server.make_url("/"))
    warc = tmp_path / "warc"
    config = make_config([base], crawl__obey_robots=False, storage__warc=str(warc))
    await crawl(config)
    await asyncio.to_thread(collection, tmp_path, warc, config.storage.db)
    port = free_port()
    wayback = await asyncio.create_subprocess_exec(
        str(WAYBACK), "--bind", "127.0.0.1", "--port", str(port),
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        replayed = {}
        async with aiohttp.ClientSession() as session:
            for page in ("", "zipped"):
                url = f"http://127.0.0.1:{port}/crawl/2id_/{base}{page}"
                replayed[page] = await fetch_when_up(session, url)
        assert replayed == {"": PLAIN, "zipped": ZIPPED}
    finally:
        wayback.terminate()
        await wayback.communicate()


async def fetch_when_up(session: aiohttp.ClientSession, url: str) -> bytes:
    """The body at `url`, once pywb (a few seconds to start) answers."""
    for _ in range(300):
        try:
            async with session.get(url) as response:
                assert response.status == 200, await response.text()
                return await response.read()
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.1)
    raise AssertionError("pywb did not answer within 30 s")
