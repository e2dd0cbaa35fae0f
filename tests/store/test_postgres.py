"""The PostgreSQL backend through the command line, on the session's own server (conftest.py):
whole crawls, kill -9 and resume, the read-side commands, bad input (one line, exit 2, nothing
written), and the password: taken from the URL, PGPASSWORD or ~/.pgpass, and never shown or
stored; and, through the backend itself, the page budgets that several processes share. (The
storage contract runs on PostgreSQL in test_contract.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from helpers import base_url
from pgserver import PgAddress
from scraper.config import StorageConfig
from scraper.crawl.seeds import digest_of
from scraper.demosite import SiteSpec, make_app
from scraper.models import CrawlRequest
from scraper.store import open_backend
from scraper.store.base import FleetRules, HostPoliteness
from scraper.store.location import redact

SCRAPER = [sys.executable, "-m", "scraper"]
SPEC = SiteSpec(pages=60, page_bytes=3000, latency=0.005, special_count=1, seed=7)
OPTIONS = ["--set", "storage.batch_size=7", "--set", "fetch.retry_backoff=0.01",
           "--set", "parse.workers=1", "--concurrency", "8"]  # fmt: skip


async def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *SCRAPER, *args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def pg_rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute(sql, params or None)
        return await cursor.fetchall()


async def tables(url: str) -> list[str]:
    found = await pg_rows(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
        "ORDER BY 1",
    )
    return [name for (name,) in found]


def one_line_error(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scraper: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
async def site(aiohttp_server: Any) -> str:
    return base_url(await aiohttp_server(make_app(SPEC)))


async def test_a_crawl_stores_the_reachable_pages_and_never_shows_the_password(
    site: str, pg_url: str, pg_server: PgAddress, tmp_path: Path
) -> None:
    secret = pg_server.password
    log = tmp_path / "crawl.log"
    code, out, err = await cli(
        "crawl", site, "--db", pg_url, "-q", *OPTIONS,
        "--log-level", "DEBUG", "--log-file", str(log), cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, err
    expected = sorted(site + path.lstrip("/") for path in SPEC.reachable())
    stored = await pg_rows(pg_url, "SELECT url FROM pages ORDER BY url")
    assert [url for (url,) in stored] == expected  # once each, nothing else
    assert await pg_rows(pg_url, "SELECT DISTINCT state FROM frontier") == [(2,)]
    ((config,),) = await pg_rows(pg_url, "SELECT config FROM crawls")
    assert json.loads(config)["storage"]["db"] == redact(pg_url)
    assert out.startswith(f"Crawl 1 finished: {len(expected)} pages")
    assert redact(pg_url) in out
    shown = [out, err]
    for command in (["crawls"], ["stats"], ["query", "SELECT * FROM crawls"],
                    ["query", "--preset", "duplicates"], ["query", "--preset", "broken-links"],
                    ["query", "--preset", "status-summary"], ["export", "--format", "csv"],
                    ["report", "--out", str(tmp_path / "r.html")]):  # fmt: skip
        code, out, err = await cli(*command, "--db", pg_url, cwd=tmp_path)
        assert code == 0, (command, err)
        shown += [out, err]
    shown.append(await asyncio.to_thread((tmp_path / "r.html").read_text))
    shown.append(await asyncio.to_thread(log.read_text))
    assert "DEBUG" in shown[-1]
    assert all(secret not in text for text in shown)


async def test_presets_answer_alike_on_both_backends(
    site: str, pg_url: str, tmp_path: Path
) -> None:
    sqlite_db = str(tmp_path / "crawl.db")
    for db in (pg_url, sqlite_db):
        code, _, err = await cli("crawl", site, "--db", db, "-q", *OPTIONS, cwd=tmp_path)
        assert code == 0, err
    for preset in ("broken-links", "slow-pages", "missing-titles", "duplicates", "status-summary"):
        answers = []
        for db in (pg_url, sqlite_db):
            code, out, err = await cli(
                "query", "--db", db, "--preset", preset, "--format", "json", cwd=tmp_path
            )
            assert code == 0, err
            answers.append(json.loads(out))
        if preset == "slow-pages":  # latencies differ from crawl to crawl: compare the shape
            assert [sorted(row) for row in answers[0]] == [sorted(row) for row in answers[1]]
        else:
            assert answers[0] == answers[1], preset


async def test_kill_9_then_resume(aiohttp_server: Any, pg_url: str, tmp_path: Path) -> None:
    from scraper.demosite import STATE

    app = make_app(SiteSpec(pages=150, page_bytes=3000, latency=0.01, seed=5))
    server = await aiohttp_server(app)
    root = base_url(server)
    process = await asyncio.create_subprocess_exec(
        *SCRAPER, "crawl", root, "--db", pg_url, "-q", *OPTIONS,
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    for _ in range(600):
        if sum(app[STATE].hits.values()) >= 40:
            break
        await asyncio.sleep(0.05)
    process.kill()
    await asyncio.wait_for(process.communicate(), 10)
    assert await pg_rows(pg_url, "SELECT status FROM crawls") == [("running",)]
    code, out, err = await cli("crawls", "--db", pg_url, cwd=tmp_path)
    assert code == 0, err
    assert "interrupted" in out and "running" not in out  # no process holds its lock
    code, out, err = await cli("crawl", root, "--db", pg_url, *OPTIONS, "-q", cwd=tmp_path)
    assert code == 0, err
    assert "resuming crawl 1" in err
    stored = await pg_rows(pg_url, "SELECT url, count(*) FROM pages GROUP BY url")
    assert all(n == 1 for _, n in stored)
    spec = SiteSpec(pages=150, page_bytes=3000, latency=0.01, seed=5)
    assert sorted(url for url, _ in stored) == sorted(
        root + path.lstrip("/") for path in spec.reachable()
    )
    assert await pg_rows(pg_url, "SELECT id, status FROM crawls") == [(1, "finished")]


async def test_a_crawl_running_elsewhere_is_not_resumed_twice(
    aiohttp_server: Any, pg_url: str, tmp_path: Path
) -> None:
    from scraper.demosite import STATE

    app = make_app(SiteSpec(pages=150, page_bytes=3000, latency=0.05, seed=5))
    root = base_url(await aiohttp_server(app))
    first = await asyncio.create_subprocess_exec(
        *SCRAPER, "crawl", root, "--db", pg_url, "-q", *OPTIONS, "--concurrency", "1",
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    for _ in range(600):
        if sum(app[STATE].hits.values()) >= 3:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the first run's crawl is in the table and unfinished
    code, _, err = await cli("crawl", root, "--db", pg_url, *OPTIONS, cwd=tmp_path)
    one_line_error(code, err, "crawl 1 is running in another process")
    first.kill()
    await first.communicate()


@pytest.mark.parametrize("case", ["unreachable", "wrong password", "foreign", "newer schema"])
async def test_bad_databases_are_one_line_exit_2_and_nothing_is_written(
    case: str, pg_url: str, pg_server: PgAddress, tmp_path: Path
) -> None:
    url = pg_url
    if case == "unreachable":
        url = "postgresql://scraper:s3cret-word@127.0.0.1:9/nowhere"  # the discard port: closed
    elif case == "wrong password":
        url = pg_server.tcp_url(urlsplit(pg_url).path.lstrip("/"), password="s3cret-word")
    elif case == "foreign":
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("CREATE TABLE invoices (id int)")
    else:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE scraper_schema (application text, version int); "
                "INSERT INTO scraper_schema VALUES ('scraper', 99)"
            )
    before = await tables(pg_url)
    needles = {
        "unreachable": ["cannot open the database", "Connection refused", "is the server running"],
        "wrong password": ["password authentication failed", "check the password"],
        "foreign": ["not a scraper database"],
        "newer schema": ["newer scraper (schema 99"],
    }[case]
    for command in (["crawl", "http://127.0.0.1:9/"], ["stats"], ["query", "SELECT 1"]):
        code, out, err = await cli(*command, "--db", url, cwd=tmp_path)
        line = one_line_error(code, err, *needles)
        assert "s3cret-word" not in line and pg_server.password not in line
        assert redact(url) in line or case != "unreachable"
        assert out == ""
    assert await tables(pg_url) == before  # nothing written


async def test_the_password_may_come_from_pgpassword_or_pgpass(
    site: str, pg_url: str, pg_server: PgAddress, tmp_path: Path
) -> None:
    import os

    dbname = urlsplit(pg_url).path.lstrip("/")
    bare = f"postgresql://scraper@127.0.0.1:{pg_server.port}/{dbname}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    code, _, err = await cli(
        "stats", "--db", bare, cwd=tmp_path, env=env | {"HOME": "/nonexistent"}
    )
    one_line_error(code, err, "no password supplied")
    with_env = env | {"PGPASSWORD": pg_server.password}
    code, _, err = await cli(
        "crawl", site, "--db", bare, "-q", *OPTIONS, cwd=tmp_path, env=with_env
    )
    assert code == 0, err
    home = tmp_path / "home"

    def write_pgpass() -> None:
        home.mkdir()
        pgpass = home / ".pgpass"
        pgpass.write_text(f"127.0.0.1:{pg_server.port}:*:scraper:{pg_server.password}\n")
        pgpass.chmod(0o600)

    await asyncio.to_thread(write_pgpass)
    code, out, err = await cli("crawls", "--db", bare, cwd=tmp_path, env=env | {"HOME": str(home)})
    assert code == 0, err
    assert "finished" in out


async def test_query_refuses_writes_through_the_command_line(
    site: str, pg_url: str, tmp_path: Path
) -> None:
    code, _, err = await cli("crawl", site, "--db", pg_url, "-q", *OPTIONS, cwd=tmp_path)
    assert code == 0, err
    before = await pg_rows(pg_url, "SELECT count(*), max(seq) FROM pages, frontier")
    for sql in ("DELETE FROM pages", "WITH gone AS (DELETE FROM pages RETURNING 1) SELECT 1",
                "SELECT 1; DELETE FROM pages", "SELECT nextval('frontier_seq_seq')",
                "COPY pages TO STDOUT", "SET default_transaction_read_only = off"):  # fmt: skip
        code, _, err = await cli("query", "--db", pg_url, sql, cwd=tmp_path)
        line = one_line_error(code, err)
        assert "refused" in line or "bad SQL" in line, line
    assert await pg_rows(pg_url, "SELECT count(*), max(seq) FROM pages, frontier") == before


async def test_page_budgets_count_leases_out_and_give_backs_in(pg_url: str) -> None:
    """crawl.max_pages and max_pages_per_host for the whole crawl (FleetRules): a lease takes
    no URL past either budget, and URLs given back to pending (a release, a close) return to
    both, so the counts are exactly what is leased or done."""
    seeds = [f"http://{host}.test:8001/{n}" for host in ("a", "b") for n in range(4)]
    rules = FleetRules(max_pages=5, max_pages_per_host=3)
    a, b = "a.test:8001", "b.test:8001"

    async def budget() -> list[tuple[Any, ...]]:
        return await pg_rows(
            pg_url,
            "SELECT (SELECT taken FROM crawl_rules), host, taken, capped, pending "
            "FROM hosts ORDER BY host",
        )

    async with open_backend(StorageConfig(db=pg_url)) as backend:
        crawl_id = await backend.crawls.start(digest_of(seeds), "{}")
        frontier = backend.frontier(crawl_id, 0.0, rules)
        await frontier.reset_leases()
        await frontier.seed([CrawlRequest(url=seed) for seed in seeds])
        leases = backend.leases(crawl_id, ttl=60, margin=1, rules=rules)
        assert {grant.host for grant in await leases.claim(2)} == {a, b}
        assert len(await frontier.lease(a, 10)) == 3  # its cap
        assert await frontier.lease(a, 10) == []
        assert len(await frontier.lease(b, 10)) == 2  # what is left of the crawl's 5
        assert await budget() == [(5, a, 3, True, True), (5, b, 2, False, True)]
        assert not await leases.over()  # spent, but URLs are leased
        await leases.release(HostPoliteness(b))  # its 2 go back, and back to the budgets
        assert await budget() == [(5 - 2, a, 3, True, True), (3, b, 0, False, True)]
        assert {grant.host for grant in await leases.claim(2)} == {b}  # (a is still ours)
        assert len(await frontier.lease(b, 10)) == 2
        await leases.close("interrupted")  # everything goes back: a uncapped, pending again
        assert await budget() == [(0, a, 0, False, True), (0, b, 0, False, True)]
        assert await pg_rows(pg_url, "SELECT count(*) FROM frontier WHERE state = 0") == [(8,)]
