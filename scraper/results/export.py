"""`scraper export`: every page with its extracted fields, as JSON lines or CSV, streamed.

Rows go from the SQLite cursor to the output one at a time, so memory stays flat for any database
size. JSON lines keep the data's shape (`fields` as a JSON value); CSV, made for
spreadsheets, gives each extracted field a column of its own (`fields.price`; a list as JSON).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from scraper.store.sqlite.reads import find_crawl, open_results

FORMATS = ("jsonl", "csv")
JSON_COLUMNS = ("fields",)  # stored as JSON text; exported as JSON values
FIELD_PREFIX = "fields."


def export(db: str | Path, out: TextIO, fmt: str = "jsonl", crawl_id: int | None = None) -> int:
    """Write the pages (of one crawl, or all) to `out`; returns how many."""
    with open_results(db) as conn:
        if crawl_id is not None:
            find_crawl(conn, crawl_id)  # a clear error for a crawl that is not there
        where, params = ("WHERE crawl_id = ?", (crawl_id,)) if crawl_id is not None else ("", ())
        cursor = conn.execute(f"SELECT * FROM pages {where} ORDER BY id", params)
        columns = [d[0] for d in cursor.description]
        rows = (dict(zip(columns, row, strict=True)) for row in cursor)
        if fmt == "csv":
            return _write_csv(rows, _field_names(conn, where, params), columns, out)
        return _write_jsonl(rows, out)


def _field_names(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> list[str]:
    """Every name an [extract] rule gave a value under, for the CSV header (one pass in SQL)."""
    where = f"{where} AND" if where else "WHERE"
    return [
        name
        for (name,) in conn.execute(
            f"SELECT DISTINCT j.key FROM pages, json_each(pages.fields) AS j "
            f"{where} pages.fields IS NOT NULL ORDER BY 1",
            params,
        )
    ]


def _write_jsonl(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    count = 0
    for row in rows:
        del row["id"]  # the database's own key: meaningless outside it
        for column in JSON_COLUMNS:
            if row.get(column) is not None:
                row[column] = json.loads(row[column])
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count


def _write_csv(
    rows: Iterator[dict[str, Any]], names: list[str], columns: list[str], out: TextIO
) -> int:
    page_columns = [c for c in columns if c not in ("id", "fields")]
    writer = csv.writer(out)
    writer.writerow([*page_columns, *(FIELD_PREFIX + name for name in names)])
    count = 0
    for row in rows:
        fields = json.loads(row["fields"]) if row["fields"] else {}
        writer.writerow(
            [*(row[c] for c in page_columns), *(_cell(fields.get(name)) for name in names)]
        )
        count += 1
    return count


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value
