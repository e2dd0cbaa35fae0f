"""`scraper query`: read-only SQL over a results database, as a table, CSV, JSON or JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from scraper.errors import QueryError
from scraper.results.formats import write_csv, write_json, write_jsonl, write_table
from scraper.store import open_results

FORMATS = ("table", "csv", "json", "jsonl")


def run_query(
    db_path: str | Path,
    sql: str,
    out: TextIO,
    fmt: str = "table",
    *,
    timeout: float | None = None,
    formulas: bool = False,
) -> int:
    """Run one read-only statement and print its rows; returns the row count. `timeout`:
    seconds the statement may run (None: no limit); `formulas`: CSV cells as they are."""
    if fmt not in FORMATS:
        raise QueryError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    with open_results(str(db_path)) as reader:
        result = reader.run_query(sql, timeout=timeout)
        if fmt == "table":
            return write_table(result.columns, result.rows, out)
        if fmt == "csv":
            return write_csv(result.columns, result.rows, out, formulas=formulas)
        if fmt == "json":
            return write_json(result.columns, result.rows, out)
        return write_jsonl(result.columns, result.rows, out)
