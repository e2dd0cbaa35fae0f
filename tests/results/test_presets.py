"""`scraper query --preset NAME`, each against a crawled site whose answers are known."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from helpers import base_url, scraper_cli
from scraper.results.presets import PRESETS

ROOT = Path(__file__).resolve().parents[2]


def page(title: str | None, *links: str, text: str = "") -> web.Response:
    head = f"<title>{title}</title>" if title is not None else ""
    anchors = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    body = f"<html><head>{head}</head><body><p>{text or title}</p>{anchors}</body></html>"
    return web.Response(text=body, content_type="text/html")


def serving(*args: str | None, text: str = "") -> Handler:
    async def handler(_: web.Request) -> web.Response:
        return page(*args, text=text)

    return handler


def site() -> web.Application:
    """A home page, a page that links to two dead ones, one without a title, two copies of the
    same page, a slow one, a 404 and a 500."""

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return page("Slow")

    async def gone(_: web.Request) -> web.Response:
        raise web.HTTPInternalServerError()

    async def missing(_: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get(
        "/", serving("Home", "/a", "/notitle", "/dup1", "/dup2", "/slow", "/missing")
    )
    app.router.add_get("/a", serving("A", "/missing", "/gone"))
    app.router.add_get("/notitle", serving(None, text="no title here"))
    app.router.add_get("/dup1", serving("Twice", text="the same words"))
    app.router.add_get("/dup2", serving("Twice", text="the same words"))
    app.router.add_get("/slow", slow)
    app.router.add_get("/gone", gone)
    app.router.add_get("/missing", missing)
    return app


@pytest.fixture
async def crawled(aiohttp_server, tmp_path: Path) -> tuple[Path, str]:
    server = await aiohttp_server(site())
    db = tmp_path / "presets.db"
    code, _, err = await scraper_cli(
        "crawl", base_url(server), "--db", str(db), "--quiet", "--set", "fetch.retries=0",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    return db, base_url(server).rstrip("/")


async def preset(db: Path, name: str) -> list[dict[str, Any]]:
    code, out, err = await scraper_cli(
        "query", "--preset", name, "--db", str(db), "--format", "json", cwd=db.parent
    )
    assert code == 0, err
    return json.loads(out)


async def test_every_preset_on_a_known_site(crawled: tuple[Path, str]) -> None:
    db, url = crawled

    broken = await preset(db, "broken-links")
    assert [(r["page"], r["link"], r["status"], r["error_kind"]) for r in broken] == [
        (f"{url}/", f"{url}/missing", 404, "http"),
        (f"{url}/a", f"{url}/gone", 500, "http"),
        (f"{url}/a", f"{url}/missing", 404, "http"),
    ]

    slow = await preset(db, "slow-pages")
    assert slow[0]["url"] == f"{url}/slow"
    assert slow[0]["ms"] >= 300
    assert len(slow) == 8  # every page fetched, fewer than the preset's 20
    assert [r["ms"] for r in slow] == sorted((r["ms"] for r in slow), reverse=True)

    assert await preset(db, "missing-titles") == [
        {"url": f"{url}/notitle", "depth": 1, "referrer": f"{url}/"}
    ]

    (duplicate,) = await preset(db, "duplicates")
    assert duplicate["copies"] == 2
    assert sorted(duplicate["urls"].split()) == [f"{url}/dup1", f"{url}/dup2"]

    summary = await preset(db, "status-summary")
    assert summary == [
        {"status": 200, "error_kind": None, "pages": 6},
        {"status": 404, "error_kind": "http", "pages": 1},
        {"status": 500, "error_kind": "http", "pages": 1},
    ]


async def test_with_the_text_pass_off(aiohttp_server, tmp_path: Path) -> None:
    """parse.text = "off": no text, length or hash is stored, so no duplicates by text; pages
    without a title are still found (the preset keys on the encoding, set for every parsed page)."""
    server = await aiohttp_server(site())
    db, url = tmp_path / "off.db", base_url(server).rstrip("/")
    code, _, err = await scraper_cli(
        "crawl", f"{url}/", "--db", str(db), "--quiet", "--set", "fetch.retries=0",
        "--set", "parse.text=off", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert await preset(db, "missing-titles") == [
        {"url": f"{url}/notitle", "depth": 1, "referrer": f"{url}/"}
    ]
    assert await preset(db, "duplicates") == []
    code, out, err = await scraper_cli(
        "query", "SELECT count(*) AS n FROM pages WHERE coalesce(text, text_length, text_hash) "
        "IS NOT NULL", "--db", str(db), "--format", "json", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == [{"n": 0}]


async def test_the_table_format_too(crawled: tuple[Path, str]) -> None:
    db, _ = crawled
    code, out, _ = await scraper_cli("query", "--preset", "status-summary", "--db", str(db),
                                     cwd=db.parent)  # fmt: skip
    assert code == 0
    assert out.splitlines()[0].split() == ["status", "error_kind", "pages"]
    assert out.splitlines()[-1] == "(3 rows)"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "give either SQL or --preset NAME"),
        (["SELECT 1", "--preset", "duplicates"], "give either SQL or --preset NAME"),
    ],
)
async def test_sql_or_a_preset(crawled: tuple[Path, str], args: list[str], needle: str) -> None:
    db, _ = crawled
    code, _, err = await scraper_cli("query", *args, "--db", str(db), cwd=db.parent)
    assert code == 2
    assert err.strip() == f"scraper: error: query: {needle} (see scraper query --help)"


def test_the_manual_shows_each_preset_as_plain_sql() -> None:
    guide = (ROOT / "docs" / "guides" / "database.md").read_text()
    for name, p in PRESETS.items():
        assert f"--preset {name}" in guide
        assert p.sql in guide, f"the database guide does not show the SQL of {name}"
