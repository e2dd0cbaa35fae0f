"""The command line through real subprocesses: exit codes, one-line errors, query, demo, Ctrl-C."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from aiohttp import web

from helpers import (
    BACKTRACKING,
    backtracking_site,
    base_url,
    new_database,
    rows,
    scraper_cli,
    served,
)
from scraper.demosite import SiteSpec, make_app

SCRAPER = [sys.executable, "-m", "scraper"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in `cwd` (never the repo: its config.toml names a public site)."""
    return subprocess.run(
        [*SCRAPER, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


async def run_async(*args: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *SCRAPER, *args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("scraper: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["crawl", "http://127.0.0.1:9/", "--concurrency", "0"], ["fetch.concurrency = 0"]),
        (["crawl", "ftp://127.0.0.1/"], ['"ftp://127.0.0.1/" is not an http(s) URL']),
        (["crawl", "not a url"], ["is not an http(s) URL"]),
        (
            ["crawl", "http://127.0.0.1:9/", "--set", "fetch.read_timeout=-2"],
            ["fetch.read_timeout"],
        ),
        (
            ["crawl", "http://127.0.0.1:9/", "--set", "fetch.concurency=2"],
            ["did you mean fetch.concurrency?"],
        ),
        (["crawl", "http://127.0.0.1:9/", "--set", 'extract.x="a[["'], ["does not compile"]),
        (
            ["crawl", "http://127.0.0.1:9/", "--set", 'extract.for=[{url="*", p={css="p[["}}]'],
            ["extract.for[1].p: CSS selector 'p[[' does not compile"],
        ),
        (
            ["crawl", "http://127.0.0.1:9/", "--set", 'extract.p={css="p", regex="(x"}'],
            ["extract.p: regex '(x' does not compile"],
        ),
        (["crawl"], ["no seeds"]),
        (["crawl", "http://127.0.0.1:9/", "--config", "absent.toml"], ["no such config file"]),
        (["crawl", "http://127.0.0.1:9/", "--db", "/proc/nope/x.db"], ["cannot create its folder"]),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, args: list[str], needles: list[str]):
    assert_one_line_error(run(*args, cwd=tmp_path), *needles)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run("crawl", "--debug", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_help_everywhere(tmp_path: Path) -> None:
    commands = ["crawl", "crawls", "stats", "query", "export", "report", "demo", "demo-site"]
    for command in ([], *([c] for c in commands)):
        result = run(*command, "--help", cwd=tmp_path)
        assert result.returncode == 0
        assert "usage: scraper" in result.stdout


@pytest.mark.parametrize("command", [["query", "SELECT 1"], ["stats"], ["export"], ["crawls"]])
def test_reading_results_leaves_the_crawl_and_report_stacks_unimported(
    tmp_path: Path, command: list[str]
) -> None:
    """The commands that read results start in a fraction of a crawl's time: aiohttp and rich
    (the crawl's) and plotly and jinja2 (the report's) are imported only by the commands that
    use them."""
    new_database(tmp_path / "results.db").close()
    script = (
        "import json, sys; from scraper.cli.main import main; "
        f"code = main({[*command, '--db', 'results.db']!r}); "
        "heavy = {m.partition('.')[0] for m in sys.modules} & {'aiohttp', 'rich', 'plotly', "
        "'jinja2'}; print(json.dumps([code, sorted(heavy)]), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert json.loads(result.stderr.splitlines()[-1]) == [0, []], result.stderr


def test_a_foreign_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "theirs.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE mine (x)")
        conn.execute("INSERT INTO mine VALUES (42)")
    conn.close()
    before = other.read_bytes()
    result = run("crawl", "http://127.0.0.1:9/", "--db", str(other), cwd=tmp_path)
    assert_one_line_error(result, "not a scraper database")
    assert other.read_bytes() == before


def test_not_a_database_at_all(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("this is a text file, not SQLite\n" * 100)
    assert_one_line_error(run("crawl", "http://127.0.0.1:9/", "--db", str(junk), cwd=tmp_path))
    assert_one_line_error(run("query", "SELECT 1", "--db", str(junk), cwd=tmp_path))


@pytest.fixture
async def crawled(aiohttp_server, tmp_path: Path) -> Path:
    """A database made by `scraper crawl` in a subprocess, from a demo site in this test's loop."""
    spec = SiteSpec(pages=30, page_bytes=3000, extras=False)
    server = await aiohttp_server(make_app(spec))
    db = tmp_path / "out.db"
    code, out, err = await run_async(
        "crawl", base_url(server), "--db", str(db), "--set", 'extract.price="p.price"', cwd=tmp_path
    )
    assert code == 0, err
    assert f"Crawl 1 finished: {len(spec.reachable())} pages" in out
    assert str(db) in out
    return db


async def test_crawl_then_query_in_every_format(crawled: Path, tmp_path: Path) -> None:
    sql = "SELECT url, status, json_extract(fields, '$.price') AS price FROM pages ORDER BY url"
    expected = await rows(crawled, sql)
    assert len(expected) == 32  # 30 pages, the home page and one list page

    code, out, _ = await run_async("query", sql, "--db", str(crawled), cwd=tmp_path)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["url", "status", "price"]
    assert lines[-1] == "(32 rows)"

    code, out, _ = await run_async(
        "query", sql, "--db", str(crawled), "--format", "csv", cwd=tmp_path
    )
    parsed = list(csv.reader(io.StringIO(out)))
    assert parsed[0] == ["url", "status", "price"]
    assert [tuple(r) for r in parsed[1:]] == [(u, str(s), p or "") for u, s, p in expected]

    code, out, _ = await run_async(
        "query", sql, "--db", str(crawled), "--format", "json", cwd=tmp_path
    )
    assert [tuple(d.values()) for d in json.loads(out)] == expected

    code, out, _ = await run_async(
        "query", sql, "--db", str(crawled), "--format", "jsonl", cwd=tmp_path
    )
    assert [tuple(json.loads(line).values()) for line in out.splitlines()] == expected


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("DELETE FROM pages", "only reads"),
        ("UPDATE pages SET title = 'x'", "only reads"),
        ("DROP TABLE links", "only reads"),
        ("CREATE TABLE t (x)", "only reads"),
        ("SELEKT * FROM pages", "bad SQL"),
        ("SELECT nope FROM pages", "bad SQL: no such column: nope"),
    ],
)
async def test_query_refuses_writes_and_bad_sql(
    crawled: Path, tmp_path: Path, sql: str, needle: str
):
    before = await rows(crawled, "SELECT count(*) FROM pages")
    code, _, err = await run_async("query", sql, "--db", str(crawled), cwd=tmp_path)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert needle in err
    assert await rows(crawled, "SELECT count(*) FROM pages") == before


def test_query_without_a_database(tmp_path: Path) -> None:
    assert_one_line_error(
        run("query", "SELECT 1", "--db", "none.db", cwd=tmp_path), "no such database"
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_a_signal_interrupts_the_crawl_with_exit_130(aiohttp_server, tmp_path, signum):
    app = make_app(SiteSpec(pages=500, page_bytes=2000, latency=0.1, extras=False))
    reached = served(app, 20)
    server = await aiohttp_server(app)
    db = tmp_path / "stopped.db"
    process = await asyncio.create_subprocess_exec(
        *SCRAPER,
        "crawl",
        base_url(server),
        "--db",
        str(db),
        "--set",
        "storage.batch_size=5",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    await asyncio.wait_for(reached.wait(), 60)
    process.send_signal(signum)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 130, err
    assert "interrupted" in out.decode()
    assert "Run the same command again to resume" in out.decode()
    ((status, pages),) = await rows(db, "SELECT status, pages FROM crawls")
    assert status == "interrupted"
    ((stored, distinct),) = await rows(db, "SELECT count(*), count(DISTINCT url) FROM pages")
    assert stored == distinct == pages
    assert 0 < stored < 501


def test_demo_crawls_and_shows_an_example_query(tmp_path: Path) -> None:
    result = run("demo", "--pages", "40", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Crawl 1 finished" in result.stdout
    assert "Example query:" in result.stdout
    assert "Page 0 — Demo Site" in result.stdout
    assert (tmp_path / "data" / "demo.db").is_file()


async def test_extraction_rules_per_url_pattern(aiohttp_server, tmp_path: Path) -> None:
    spec = SiteSpec(pages=20, page_bytes=1000, extras=False)
    server = await aiohttp_server(make_app(spec))
    # A config.toml of the test's own, found in the working directory like a user's would be.
    config = """
[storage]
db = "rules.db"

[extract]
heading = "h1"

[[extract.for]]
url = "*/page/*"
euros = { css = "p.price", regex = '^(\\d+)\\.' }
heading = { css = "h1", regex = 'Page \\d+' }
"""
    await asyncio.to_thread((tmp_path / "config.toml").write_text, config)
    code, _, err = await run_async("crawl", base_url(server), "--quiet", cwd=tmp_path)
    assert code == 0, err
    assert "config:" not in err  # quiet: the summary only
    code, _, err = await run_async("crawl", base_url(server), "--fresh", cwd=tmp_path)
    assert code == 0, err
    assert err.splitlines()[0] == "scraper: config: config.toml"  # never applied unsaid
    found = await rows(
        tmp_path / "rules.db",
        "SELECT url, json_extract(fields, '$.heading'), json_extract(fields, '$.euros') "
        "FROM pages ORDER BY url",
    )
    by_path = {url.removeprefix(base_url(server).rstrip("/")): rest for url, *rest in found}
    assert by_path["/"] == ["Demo Site", None]  # only the rule for every page
    for i in range(spec.pages):
        euros = spec.price(i).split(".")[0]
        assert by_path[f"/page/{i}"] == [f"Page {i}", euros]


def test_demo_never_replaces_a_file_that_is_not_its_own(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("important notes\n")
    result = run("demo", "--pages", "3", "--db", str(notes), cwd=tmp_path)
    assert_one_line_error(result, "is not a database of an earlier demo")
    assert notes.read_text() == "important notes\n"


def test_demo_site_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("demo-site", "--port", str(port), cwd=tmp_path)
    assert_one_line_error(result, f"cannot listen on port {port}")


async def test_a_second_crawl_of_the_same_database_is_refused(aiohttp_server, tmp_path):
    reached = asyncio.Event()

    @web.middleware
    async def notice(request: web.Request, handler):
        reached.set()
        return await handler(request)

    app = make_app(SiteSpec(pages=200, page_bytes=2000, latency=0.2, extras=False))
    app.middlewares.append(notice)
    server = await aiohttp_server(app)
    db = tmp_path / "shared.db"
    first = await asyncio.create_subprocess_exec(
        *SCRAPER, "crawl", base_url(server), "--db", str(db), cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    await asyncio.wait_for(reached.wait(), 60)
    code, _, err = await run_async("crawl", base_url(server), "--db", str(db), cwd=tmp_path)
    first.send_signal(signal.SIGINT)
    await asyncio.wait_for(first.communicate(), 60)
    assert code == 2
    assert f"another crawl is writing to it (pid {first.pid})" in err


async def test_debug_loop_runs_the_crawl_in_asyncio_debug_mode(aiohttp_server, tmp_path: Path):
    server = await aiohttp_server(make_app(SiteSpec(pages=5, page_bytes=1000, extras=False)))
    db = tmp_path / "out.db"
    args = ("crawl", base_url(server), "--db", str(db), "--debug-loop", "--quiet")
    code, out, err = await run_async(*args, cwd=tmp_path)
    assert code == 0, err
    assert "asyncio debug mode (--debug-loop)" in err
    assert "Crawl 1 finished" in out
    code, _, err = await run_async("crawl", base_url(server), "--db", str(db), cwd=tmp_path)
    assert code == 0 and "debug mode" not in err  # off unless asked for


def test_deeply_nested_toml_is_one_line_not_a_recursion_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("[crawl]\nseeds = " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert_one_line_error(
        run("crawl", "--config", str(deep), cwd=tmp_path), "deep.toml: not valid TOML", "nested"
    )
    assert_one_line_error(
        run("crawl", "--set", "crawl.seeds=" + "[" * 50_000 + "]" * 50_000, cwd=tmp_path),
        "--set crawl.seeds=...: arrays or tables nested too deeply",
    )


def test_a_huge_bad_value_is_shown_shortened(tmp_path: Path) -> None:
    huge = "x" * 100_000
    result = run("crawl", "--set", f'crawl.seeds=["{huge}"]', cwd=tmp_path)
    assert_one_line_error(result, "crawl.seeds = ", "is not an http(s) URL", "characters)")
    assert len(result.stderr) < 400


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("[1979-05-27]", 'crawl.seeds = ["1979-05-27"]: "1979-05-27" is not an http(s) URL'),
        ("[07:32:00]", '"07:32:00" is not an http(s) URL'),
        ('["http://127.0.0.1:9/\x1b]0;x\x07"]', "\\u001b]0;x\\u0007"),  # not TOML: a string
        ("['ftp://127.0.0.1:9/\u202e']", "\\u202e"),
    ],
)
def test_a_value_of_any_toml_type_is_one_line(tmp_path: Path, value: str, needle: str) -> None:
    result = run("crawl", "--set", f"crawl.seeds={value}", cwd=tmp_path)
    assert_one_line_error(result, needle)
    assert "\x1b" not in result.stderr and "\u202e" not in result.stderr


async def test_a_second_ctrl_c_ends_the_crawl_even_when_the_loop_is_stuck(aiohttp_server, tmp_path):
    """Parsing on the loop itself (parse.workers = 0), a backtracking regex holds it in C code
    for years: no handler of ours can run. The first Ctrl-C cannot be acted on; the second ends
    the process all the same (by the signal's default action, as a shell expects)."""
    evil = asyncio.Event()
    server = await aiohttp_server(backtracking_site(served_evil=evil))
    process = await asyncio.create_subprocess_exec(
        *SCRAPER, "crawl", base_url(server), "--db", str(tmp_path / "stuck.db"),
        "--set", "parse.workers=0", "--set", f"extract.h={{css = 'h1', regex = '{BACKTRACKING}'}}",
        "--set", "parse.regex_timeout=1e6",
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.wait_for(evil.wait(), 60)
        for _ in range(600):  # until the loop spins on it (2 s of CPU, start-up included)
            if await asyncio.to_thread(lambda: psutil.Process(process.pid).cpu_times().user > 2):
                break
            await asyncio.sleep(0.1)
        process.send_signal(signal.SIGINT)
        await asyncio.sleep(0.5)
        assert process.returncode is None  # the first one is only noted: the loop is stuck
        process.send_signal(signal.SIGINT)
        await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == -signal.SIGINT
    finally:
        if process.returncode is None:
            process.kill()


async def test_a_config_with_two_mistakes_says_both(tmp_path):
    config = tmp_path / "two.toml"
    await asyncio.to_thread(
        config.write_text, '[fetch]\nconcurency = 3\n[crawl]\nmax_pages = "many"\n'
    )
    code, out, err = await scraper_cli(
        "crawl", "http://127.0.0.1:9/", "--config", str(config), "--db", str(tmp_path / "x.db"),
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("scraper: error: ") for line in lines)
    assert "crawl.max_pages" in err and "fetch.concurency" in err
    assert not await asyncio.to_thread((tmp_path / "x.db").exists)  # nothing stored


async def test_a_crawl_without_a_config_file_says_so(aiohttp_server, tmp_path):
    server = await aiohttp_server(make_app(SiteSpec(pages=3, page_bytes=500, extras=False)))
    code, out, err = await scraper_cli(
        "crawl", base_url(server), "--db", str(tmp_path / "x.db"), cwd=tmp_path
    )
    assert code == 0, err
    assert err.splitlines()[0] == "scraper: config: none (defaults, --set and seeds)"
    assert "finished" in out


async def test_no_seed_at_all_is_one_line(tmp_path):
    code, out, err = await scraper_cli("crawl", "--db", str(tmp_path / "x.db"), cwd=tmp_path)
    assert code == 2 and out == ""
    assert err.splitlines()[-1].startswith("scraper: error: no seeds")
    assert len([line for line in err.splitlines() if line.startswith("scraper: error")]) == 1


def test_the_shipped_config_crawls_nothing_by_itself() -> None:
    import tomllib

    shipped = tomllib.loads((Path(__file__).parents[2] / "config.toml").read_text())
    assert shipped["crawl"]["seeds"] == [] and shipped["crawl"]["max_pages"] == 0
