"""Log lines: what a server says reaches the terminal as visible escapes, never as commands."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

from helpers import rows
from scraper.cli.logs import formatter

SCRAPER = [sys.executable, "-m", "scraper"]
HOSTILE = "Down\x1b]0;pwned\x07\x1b[2J\u202eok"  # sets the window title, clears the screen


def record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("scraper.x", logging.WARNING, __file__, 1, message, args, None)


def test_the_text_format_shows_control_characters_as_escapes() -> None:
    line = formatter("text").format(record("robots.txt unavailable: %s", HOSTILE))
    assert line.endswith("robots.txt unavailable: Down\\x1b]0;pwned\\x07\\x1b[2J\\u202eok")
    assert "\x1b" not in line and "\u202e" not in line


def test_a_traceback_keeps_its_lines() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed: %s", "x\ny")
        failed.exc_info = sys.exc_info()
    text = formatter("text").format(failed)
    assert "failed: x\\x0ay\nTraceback (most recent call last):\n" in text


def test_json_lines_escape_by_themselves() -> None:
    line = formatter("json").format(record("%s", HOSTILE))
    assert "\x1b" not in line and json.loads(line)["message"] == HOSTILE


async def raw_server(answers: dict[bytes, bytes]) -> asyncio.Server:
    """A server that answers each request line's path with bytes as they are: aiohttp's own
    server would not send a reason phrase with control characters in it; a hostile one does."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            writer.write(answers.get(path, answers[b"*"]))
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def response(status: bytes, body: bytes = b"", content_type: bytes = b"text/html") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        + b"Content-Type: " + content_type + b"\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )  # fmt: skip


async def test_a_server_s_words_reach_the_log_as_escapes(tmp_path: Path) -> None:
    """A hostile reason phrase on robots.txt (logged as a warning while the crawl waits for it)
    and on a page (stored as its error) is shown, not obeyed, on stderr and in the table."""
    reason = HOSTILE.encode()
    server = await raw_server(
        {
            b"/robots.txt": response(b"503 " + reason),
            b"*": response(b"404 " + reason, b"gone", b"text/html\x1b[31m"),
        }
    )
    port = server.sockets[0].getsockname()[1]
    shown = "Down\\x1b]0;pwned\\x07\\x1b[2J\\u202eok"
    printed = {}
    async with server:
        for name, obey in (("robots.db", "true"), ("pages.db", "false")):
            process = await asyncio.create_subprocess_exec(
                *SCRAPER, "crawl", f"http://127.0.0.1:{port}/", "--db", name,
                "--set", "fetch.retries=0", "--set", "fetch.retry_backoff_max=0.05",
                "--set", "crawl.sitemaps=false", "--set", f"crawl.obey_robots={obey}",
                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 0, err
            printed[name] = text = out.decode() + err.decode()
            assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert f"robots.txt unavailable: HTTP 503 {shown}; asking again" in printed["robots.db"]
    ((error,),) = await rows(tmp_path / "robots.db", "SELECT error FROM pages")
    assert error == f"robots.txt unavailable: HTTP 503 {shown}"
    # A page's error is escaped as it is stored; its Content-Type is data, kept as sent (the
    # query table shows it escaped).
    stored = await rows(tmp_path / "pages.db", "SELECT error, content_type FROM pages")
    ((error, content_type),) = stored
    assert (error, content_type) == (f"HTTP 404 {shown}", "text/html\x1b[31m")
