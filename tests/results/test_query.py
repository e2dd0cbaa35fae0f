"""`scraper query`: reads work (table-valued functions too), writes are refused, a runaway query
ends at its timeout or on Ctrl-C, and what the web wrote cannot act on the terminal."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import SCRAPER, new_database
from scraper.errors import QueryError
from scraper.results.query import run_query

RUNAWAY = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
HOSTILE_TITLE = "\x1b[2J\x1b]0;owned\x07fake\r\nscraper: crawl finished\u202e"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "q.db"
    conn = new_database(path)
    conn.executemany(
        "INSERT INTO pages (url, crawl_id, depth, fetched_at, attempts, title, links) "
        "VALUES (?, 1, 0, '2024-01-01T00:00:00.000+00:00', 1, ?, ?)",
        [
            ("http://127.0.0.1/a", HOSTILE_TITLE, '["http://127.0.0.1/b"]'),
            ("http://127.0.0.1/b", '=HYPERLINK("http://127.0.0.1/x")', "[]"),
        ],
    )
    conn.close()
    return path


def query(db: Path, sql: str, fmt: str = "table", **options: object) -> str:
    out = io.StringIO()
    run_query(db, sql, out, fmt, **options)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT p.url, j.value FROM pages p, json_each(p.links) j",
        "SELECT name FROM pragma_table_info('pages')",
        "SELECT count(*) FROM links",  # the view over json_each
    ],
)
def test_table_valued_functions_are_reads(db: Path, sql: str) -> None:
    assert "refused" not in query(db, sql)
    assert query(db, sql) == query(db, sql)  # the first use and the next alike


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM pages",
        "UPDATE pages SET title = 'x'",
        "INSERT INTO crawls (started_at, status, seeds, config) VALUES ('', '', '', '')",
        "DROP VIEW links",
        "CREATE TABLE t (a)",
        "ATTACH DATABASE ':memory:' AS other",
    ],
)
def test_writes_are_refused_after_a_read_of_the_schema(db: Path, sql: str) -> None:
    query(db, "SELECT * FROM pragma_table_info('pages')")
    with pytest.raises(QueryError, match="refused"):
        query(db, sql)
    assert "(2 rows)" in query(db, "SELECT url FROM pages")


def test_a_runaway_query_stops_at_its_timeout(db: Path) -> None:
    with pytest.raises(QueryError, match=r"ran past --timeout 0\.3 s"):
        query(db, RUNAWAY, timeout=0.3)


def test_ctrl_c_interrupts_a_runaway_query(db: Path, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*SCRAPER, "query", "--db", str(db), RUNAWAY],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)  # started and deep in the recursion (it never ends by itself)
    assert process.poll() is None
    os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "interrupted" in err


def test_the_table_shows_control_characters_as_escapes(db: Path) -> None:
    out = query(db, "SELECT title FROM pages ORDER BY url")
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out and "\u202e" not in out
    assert "\\x1b[2J\\x1b]0;owned\\x07fake\\x0d scraper: crawl finished\\u202e" in out


def test_the_table_streams_any_number_of_rows(db: Path) -> None:
    out = query(db, "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r LIMIT 5000) "
                    "SELECT n, 'row ' || n AS label FROM r")  # fmt: skip
    lines = out.splitlines()
    assert lines[-1] == "(5000 rows)" and len(lines) == 5003
    assert lines[2].split() == ["1", "row", "1"] and lines[-2].split() == ["5000", "row", "5000"]


def test_csv_cells_that_start_a_formula_are_neutralised(db: Path) -> None:
    sql = "SELECT url, title FROM pages WHERE url LIKE '%b'"
    assert query(db, sql, "csv").splitlines()[1] == (
        'http://127.0.0.1/b,"\'=HYPERLINK(""http://127.0.0.1/x"")"'
    )
    raw = query(db, sql, "csv", formulas=True)
    assert raw.splitlines()[1] == 'http://127.0.0.1/b,"=HYPERLINK(""http://127.0.0.1/x"")"'


def test_the_cli_bounds_a_query_with_timeout(db: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [*SCRAPER, "query", "--db", str(db), "--timeout", "0.3", RUNAWAY],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "scraper: error: the query ran past --timeout 0.3 s; stopped\n"
