"""Errors people can act on: a locked or read-only database, a folder for a database, a log file
that cannot be written. Each is one line on stderr and exit code 2 (a traceback only with --debug).

These tests run no event loop of their own, so they hold SQLite locks with plain sqlite3.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from helpers import new_database

SCRAPER = [sys.executable, "-m", "scraper"]
NOWHERE = "http://127.0.0.1:9/"  # never fetched: every error here comes first


def run(*args: str, cwd: Path, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, *SCRAPER, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("scraper: error: ")
    assert needle in result.stderr


def make_database(path: Path) -> None:
    """A small scraper database in WAL mode, as a crawl leaves it."""
    conn = new_database(path)
    conn.execute(
        "INSERT INTO pages (url, crawl_id, depth, fetched_at, attempts, status, elapsed_ms) "
        "VALUES ('http://x.test/', 1, 0, '2024-01-01T00:00:00+00:00', 1, 200, 12.0)"
    )
    conn.close()


def test_a_locked_database(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    make_database(db)
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = run("crawl", NOWHERE, "--db", str(db), "--quiet", cwd=tmp_path)
        one_line(result, "database is locked: another program holds it (another crawl?)")
        # readers are not blocked by a writer in WAL mode
        assert run("stats", "--db", str(db), cwd=tmp_path).returncode == 0
    finally:
        holder.close()


def bound_by_file_modes() -> list[str]:
    """A command prefix under which a subprocess is held to file modes: none for a user without
    capabilities. Root ignores modes (CAP_DAC_OVERRIDE), so root's subprocess runs, through
    util-linux's setpriv, as root still but with no capability other than CAP_DAC_READ_SEARCH:
    it reads whatever root may read (the checkout and its virtualenv wherever they live, the
    Python they point to) and writes only where the modes let root, the owner, write."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file read-only")
    prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-all,+dac_read_search"]
    probe = subprocess.run(
        [*prefix, "true"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"running as root, setpriv cannot drop capabilities: {probe.stderr.strip()}")
    return prefix


@pytest.fixture
def read_only_db(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A database this test's subprocesses may read but not write: the file and its folder are
    read-only, and the subprocesses run under `bound_by_file_modes()`, as the same user."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    make_database(folder / "ro.db")
    (folder / "ro.db").chmod(0o444)
    folder.chmod(0o555)
    try:
        yield folder / "ro.db", bound_by_file_modes()
    finally:
        folder.chmod(0o755)  # so that pytest can remove it


def test_a_read_only_database(read_only_db: tuple[Path, list[str]]) -> None:
    db, prefix = read_only_db
    result = run("crawl", NOWHERE, "--db", str(db), cwd=db.parent, prefix=prefix)
    one_line(result, "cannot write: the file or its folder is read-only")
    # ... and it can still be read, even though SQLite cannot create its shared index file there
    result = run("query", "SELECT url, status FROM pages", "--db", str(db), "--format", "json",
                 cwd=db.parent, prefix=prefix)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"url": "http://x.test/", "status": 200}]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["crawl", NOWHERE, "--db", "."], "unable to open database file: is it a folder"),
        (
            ["crawl", NOWHERE, "--log-file", "/proc/nope/crawl.log"],
            "--log-file /proc/nope/crawl.log: cannot write there",
        ),
        (["stats", "--db", "absent.db"], "absent.db: no such database (crawl first, or pass --db)"),
        (["export", "--db", "absent.db"], "absent.db: no such database"),
        (["report", "--db", "absent.db"], "absent.db: no such database"),
        (["query", "--preset", "duplicates", "--db", "absent.db"], "absent.db: no such database"),
    ],
)
def test_more_user_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    one_line(run(*args, cwd=tmp_path), needle)


def test_debug_shows_the_traceback_then_the_line(tmp_path: Path) -> None:
    result = run("stats", "--db", "absent.db", "--debug", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("Traceback")
    assert result.stderr.endswith("scraper: error: absent.db: no such database "
                                  "(crawl first, or pass --db)\n")  # fmt: skip
