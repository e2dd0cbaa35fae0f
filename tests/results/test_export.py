"""`scraper export`: JSON lines and CSV that round-trip to the database, streamed."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from helpers import SCRAPER, base_url, new_database, rows, scraper_cli
from scraper.demosite import SiteSpec, make_app
from scraper.results.export import export
from scraper.store.rows import PAGE_COLUMNS

SITE = SiteSpec(pages=30, page_bytes=2000, error_rate=0.1, extras=False)
RULES = [
    "--set",
    'extract.price="p.price"',
    "--set",
    'extract.links={css="a", attr="href", all=true}',
]


@pytest.fixture
async def crawled(aiohttp_server, tmp_path: Path) -> Path:
    """Two crawls of one site into one database: the whole site, then its home page again."""
    server = await aiohttp_server(make_app(SITE))
    db = tmp_path / "e.db"
    for more in ([], ["--max-pages", "1"]):
        code, _, err = await scraper_cli(
            "crawl", base_url(server), "--db", str(db), "--quiet", "--set",
            "fetch.max_bytes=100000", "--set", "fetch.retry_backoff=0.01", *RULES, *more,
            cwd=tmp_path,
        )  # fmt: skip
        assert code == 0, err
    return db


async def database(db: Path, where: str = "") -> list[dict[str, Any]]:
    columns = ", ".join(PAGE_COLUMNS)
    found = await rows(db, f"SELECT {columns} FROM pages {where} ORDER BY id")
    return [dict(zip(PAGE_COLUMNS, row, strict=True)) for row in found]


async def test_jsonl_round_trips(crawled: Path) -> None:
    code, out, err = await scraper_cli("export", "--db", str(crawled), cwd=crawled.parent)
    assert code == 0, err
    exported = [json.loads(line) for line in out.splitlines()]
    expected = await database(crawled)
    assert len(exported) == len(expected) > 30
    assert any(page["fields"] and page["fields"]["links"] for page in exported)
    assert any(isinstance(page["links"], list) and page["links"] for page in exported)
    as_json = ("fields", "field_errors", "links")  # stored as JSON text, exported as JSON values
    for page, row in zip(exported, expected, strict=True):
        assert set(page) == set(PAGE_COLUMNS)
        for column in as_json:
            assert page[column] == (json.loads(row[column]) if row[column] else None)
        assert {k: v for k, v in page.items() if k not in as_json} == {
            k: v for k, v in row.items() if k not in as_json
        }


async def test_csv_round_trips_with_a_column_per_field(crawled: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "pages.csv"
    code, out, err = await scraper_cli(
        "export", "--db", str(crawled), "--format", "csv", "--out", str(target), cwd=tmp_path
    )
    assert code == 0, err
    assert out == ""
    text = await asyncio.to_thread(target.read_text, encoding="utf-8")
    exported = list(csv.DictReader(io.StringIO(text, newline="")))
    expected = await database(crawled)
    assert len(exported) == len(expected)
    columns = [c for c in PAGE_COLUMNS if c != "fields"]
    assert list(exported[0]) == [*columns, "fields.links", "fields.price"]
    for page, row in zip(exported, expected, strict=True):
        assert page["url"] == row["url"]
        assert page["status"] == ("" if row["status"] is None else str(row["status"]))
        fields = json.loads(row["fields"]) if row["fields"] else {}
        assert page["fields.price"] == (fields.get("price") or "")
        links = fields.get("links")
        assert page["fields.links"] == ("" if links is None else json.dumps(links))
    left = await asyncio.to_thread(lambda: list(target.parent.iterdir()))
    assert left == [target]  # no temporary file


async def test_one_crawl_only(crawled: Path) -> None:
    code, out, _ = await scraper_cli("export", "--db", str(crawled), "--crawl", "2",
                                     cwd=crawled.parent)  # fmt: skip
    assert code == 0
    exported = [json.loads(line) for line in out.splitlines()]
    expected = await database(crawled, "WHERE crawl_id = 2")
    assert len(expected) == 1
    assert [page["url"] for page in exported] == [row["url"] for row in expected]


async def test_user_errors(crawled: Path) -> None:
    for args, needle in [
        (["--crawl", "7"], "--crawl 7: no such crawl (this database has crawl 1 to 2)"),
        (["--out", "/proc/nope/pages.jsonl"], "--out /proc/nope/pages.jsonl: cannot write there"),
        (["--out", "."], "--out .: cannot write there"),
        (["--format", "xml"], "invalid choice: 'xml'"),
    ]:
        code, out, err = await scraper_cli("export", "--db", str(crawled), *args,
                                           cwd=crawled.parent)  # fmt: skip
        assert code == 2, args
        assert needle in err.strip().splitlines()[-1]
        assert "Traceback" not in err
        assert out == ""


def make_database(path: Path, pages: int) -> None:
    conn = new_database(path)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO pages (url, crawl_id, depth, fetched_at, attempts, title, fields) "
        "VALUES (?, 1, 0, '2024-01-01T00:00:00+00:00', 1, ?, ?)",
        (
            (f"http://x.test/{i}", "t" * 500, json.dumps({"tags": ["a" * 200] * 5}))
            for i in range(pages)
        ),
    )
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_memory_stays_flat_whatever_the_size(tmp_path: Path, fmt: str) -> None:
    def peak(pages: int) -> int:
        db = tmp_path / f"{pages}.db"
        make_database(db, pages)
        with open(tmp_path / "out", "w") as out:
            tracemalloc.start()
            try:
                assert export(db, out, fmt) == pages
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    small, large = peak(500), peak(10_000)  # 20 times the rows (about 15 MB of JSON)
    assert large < 2 * small + 200_000, (small, large)


def test_a_reader_that_stops_early_is_no_error(tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    make_database(db, 5_000)
    command = " ".join([*SCRAPER, "export", "--db", str(db)]) + " | head -n 1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["url"] == "http://x.test/0"


def test_csv_export_neutralises_formulas_unless_asked(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    conn = new_database(db)
    conn.execute(
        "INSERT INTO pages (url, crawl_id, depth, fetched_at, attempts, title, fields) VALUES "
        "('http://127.0.0.1/', 1, 0, '2024-01-01T00:00:00+00:00', 1, '@SUM(A1)', ?)",
        (json.dumps({"price": "-1+1", "note": "+cmd|' /C calc'!A0"}),),
    )
    conn.close()
    safe, raw = io.StringIO(), io.StringIO()
    export(db, safe, "csv")
    export(db, raw, "csv", formulas=True)
    (row,) = csv.DictReader(io.StringIO(safe.getvalue()))
    assert (row["title"], row["fields.price"], row["fields.note"]) == (
        "'@SUM(A1)",
        "'-1+1",
        "'+cmd|' /C calc'!A0",
    )
    (row,) = csv.DictReader(io.StringIO(raw.getvalue()))
    assert (row["title"], row["fields.price"]) == ("@SUM(A1)", "-1+1")
