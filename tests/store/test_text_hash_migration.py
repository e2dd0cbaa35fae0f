"""Schema v5: the visible text's hash changed definition; the hashes stored before are marked.

A v4 database with old (BLAKE2b) hashes is crawled into: the old rows keep their duplicates among
themselves, the new rows among themselves, and no old hash equals a new one.
"""

from __future__ import annotations

import re

import aiosqlite
from aiohttp import web

from helpers import base_url, crawl, rows
from scraper.store.sqlite.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION

OLD = "0123456789abcdef0123456789abcdef"  # a BLAKE2b-128 hex digest, as v4 stored them


def site() -> web.Application:
    async def page(request: web.Request) -> web.Response:
        links = "".join(f'<a href="/{n}">{n}</a>' for n in ("a", "b", "c"))
        text = "other words" if request.path == "/c" else "the same words"
        return web.Response(text=f"<p>{text}</p>{links}", content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name:.*}", page)
    return app


async def test_old_hashes_are_marked_and_never_match_new_ones(
    aiohttp_server, make_config, tmp_path
):
    db = tmp_path / "crawl.db"
    async with aiosqlite.connect(db) as conn:
        await conn.executescript(
            "BEGIN; " + ";".join(MIGRATIONS[:4]) + f"; PRAGMA application_id = {APPLICATION_ID}; "
            "PRAGMA user_version = 4; "
            "INSERT INTO crawls (started_at, status, seeds, config) "
            "VALUES ('x', 'finished', '[]', '{}');"
            "INSERT INTO pages (url, crawl_id, depth, fetched_at, attempts, text_length, text_hash)"
            f" VALUES ('http://old.example/1', 1, 0, 'x', 1, 14, '{OLD}'),"
            f" ('http://old.example/2', 1, 0, 'x', 1, 14, '{OLD}'),"
            " ('http://old.example/3', 1, 0, 'x', 1, NULL, NULL); COMMIT;"
        )
    server = await aiohttp_server(site())
    await crawl(make_config([base_url(server)], storage__db=str(db), crawl__obey_robots=False))
    assert await rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    hashes = dict(await rows(db, "SELECT url, text_hash FROM pages"))
    assert hashes["http://old.example/1"] == hashes["http://old.example/2"] == f"blake2b:{OLD}"
    assert hashes["http://old.example/3"] is None
    new = {url: h for url, h in hashes.items() if "old.example" not in url}
    assert len(new) == 4 and all(re.fullmatch("[0-9a-f]{32}", h) for h in new.values())
    duplicates = await rows(db, "SELECT url, duplicate_of FROM duplicates WHERE why = 'same text'")
    root = base_url(server)
    assert sorted(duplicates) == sorted(
        [("http://old.example/2", "http://old.example/1"), (root + "a", root), (root + "b", root)]
    )
