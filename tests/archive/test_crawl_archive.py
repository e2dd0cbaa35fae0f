"""A crawl with storage.warc: every fetch archived, bodies as sent, revisits on a re-crawl."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from warcio.archiveiterator import ArchiveIterator

from helpers import crawl, crawl_with, rows
from scraper.results.export import export

PLAIN = b"<html><head><title>plain</title></head><body><a href='/zipped'>z</a>" + b"p" * 3000
ZIPPED = b"<html><head><title>zipped</title></head><body><a href='/gone'>g</a>" + b"z" * 9000
# Compressed once, so the test knows the very bytes the server sent.
ZIPPED_WIRE = gzip.compress(ZIPPED, mtime=0)
ROBOTS = b"User-agent: *\nAllow: /\nSitemap: /sitemap.xml\n"
WARCIO = [str(Path(sys.executable).with_name("warcio"))]


def site() -> web.Application:
    async def plain(request: web.Request) -> web.Response:
        if request.headers.get("If-None-Match") == '"p1"':
            return web.Response(status=304, headers={"ETag": '"p1"'})
        return web.Response(body=PLAIN, content_type="text/html", headers={"ETag": '"p1"'})

    async def zipped(request: web.Request) -> web.Response:
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/html"}
        return web.Response(body=ZIPPED_WIRE, headers=headers)

    async def robots(request: web.Request) -> web.Response:
        return web.Response(body=ROBOTS, content_type="text/plain")

    async def sitemap(request: web.Request) -> web.Response:
        base = f"http://{request.host}"
        body = (
            '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<url><loc>{base}/</loc></url></urlset>"
        )
        return web.Response(text=body, content_type="application/xml")

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such page", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", plain)
    app.router.add_get("/zipped", zipped)
    app.router.add_get("/robots.txt", robots)
    app.router.add_get("/sitemap.xml", sitemap)
    app.router.add_get("/gone", gone)
    return app


def records(folder: Path) -> list[dict[str, Any]]:
    """Every record of every file in the folder, as the test needs it."""
    found = []
    for path in sorted(folder.iterdir()):
        with path.open("rb") as stream:
            for record in ArchiveIterator(stream):
                headers = record.rec_headers
                found.append(
                    {
                        "file": path.name,
                        "type": record.rec_type,
                        "uri": headers.get_header("WARC-Target-URI"),
                        "id": headers.get_header("WARC-Record-ID"),
                        "to": headers.get_header("WARC-Concurrent-To"),
                        "ip": headers.get_header("WARC-IP-Address"),
                        "profile": headers.get_header("WARC-Profile"),
                        "refers": headers.get_header("WARC-Refers-To-Date"),
                        "date": headers.get_header("WARC-Date"),
                        "digest": headers.get_header("WARC-Payload-Digest"),
                        "http": record.http_headers,
                        "body": record.raw_stream.read(),
                    }
                )
    return found


def check(folder: Path) -> None:
    files = sorted(str(p) for p in folder.iterdir())
    assert files and all(f.endswith(".warc.gz") for f in files)
    checked = subprocess.run([*WARCIO, "check", *files], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


async def test_every_fetch_is_archived_as_sent_and_a_recrawl_writes_revisits(
    aiohttp_server: Any, make_config: Any, tmp_path: Path
) -> None:
    server = await aiohttp_server(site())
    base = str(server.make_url("/"))
    warc = tmp_path / "warc"
    config = make_config([base], crawl__sitemaps=True, storage__warc=str(warc))
    await crawl(config)
    await asyncio.to_thread(check, warc)
    found = await asyncio.to_thread(records, warc)
    responses = {r["uri"]: r for r in found if r["type"] == "response"}
    requests = {r["to"]: r for r in found if r["type"] == "request"}
    expected = {base, base + "zipped", base + "gone", base + "robots.txt", base + "sitemap.xml"}
    assert set(responses) == expected
    for response in responses.values():  # each response has its request, with what was sent
        request = requests[response["id"]]
        assert request["uri"] == response["uri"] and response["ip"] == "127.0.0.1"
        assert request["http"].get_header("User-Agent") == config.fetch.user_agent
        assert request["http"].get_header("Host") == f"{server.host}:{server.port}"
    assert responses[base]["body"] == PLAIN
    zipped = responses[base + "zipped"]
    assert zipped["body"] == ZIPPED_WIRE  # as sent: still gzip
    assert zipped["http"].get_header("Content-Encoding") == "gzip"
    assert responses[base + "robots.txt"]["body"] == ROBOTS
    assert responses[base + "gone"]["body"] == b"no such page"
    assert sum(r["type"] == "warcinfo" for r in found) == len({r["file"] for r in found})

    # The parser saw the decoded page, as it did when aiohttp decoded.
    stored = await rows(
        config.storage.db,
        "SELECT url, title, warc_file, warc_offset, warc_length FROM pages ORDER BY url",
    )
    titles = {url: title for url, title, *_ in stored}
    assert titles[base + "zipped"] == "zipped"
    assert all(file for _, _, file, _, _ in stored)  # the sitemap and the 404 too
    for url, _, file, offset, length in stored:  # each row points at its whole response record
        assert await asyncio.to_thread(record_at, warc / file, offset, length) == ("response", url)

    # The CDXJ index from the database names each page's response record where it is.
    out = io.StringIO()
    assert await asyncio.to_thread(export, config.storage.db, out, "cdxj") == len(stored)
    lines = out.getvalue().splitlines()
    assert lines == sorted(lines)
    for line in lines:
        key, stamp, fields = line.split(" ", 2)
        entry = json.loads(fields)
        place = (warc / entry["filename"], int(entry["offset"]), int(entry["length"]))
        assert await asyncio.to_thread(record_at, *place) == ("response", entry["url"])
        assert entry["digest"] == responses[entry["url"]]["digest"].removeprefix("sha1:")
        assert stamp == re.sub(r"\D", "", responses[entry["url"]]["date"])[:14]
        assert key.startswith(f"1,0,0,127:{server.port})/")

    # A re-crawl: the page with an ETag answers 304, archived as a revisit of its response.
    again = make_config(
        [base], crawl__sitemaps=False, crawl__obey_robots=False, storage__warc=str(warc)
    )
    await crawl_with(again, fresh=True)
    await asyncio.to_thread(check, warc)
    revisits = [r for r in await asyncio.to_thread(records, warc) if r["type"] == "revisit"]
    assert [r["uri"] for r in revisits] == [base]
    assert revisits[0]["profile"].endswith("/revisit/server-not-modified")
    assert revisits[0]["refers"] == responses[base]["date"]
    assert revisits[0]["digest"] == responses[base]["digest"]


def record_at(path: Path, offset: int, length: int) -> tuple[str, str]:
    """The type and URI of the record in the gzip member at `offset`, `length` bytes long."""
    with path.open("rb") as stream:
        stream.seek(offset)
        member = stream.read(length)
    record = next(iter(ArchiveIterator(io.BytesIO(member))))
    return record.rec_type, record.rec_headers.get_header("WARC-Target-URI")
