"""`scraper query`: read-only SQL over a results database, as a table, CSV, JSON or JSONL."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from scraper.errors import QueryError
from scraper.store import open_results

FORMATS = ("table", "csv", "json", "jsonl")
MAX_CELL = 80


def run_query(
    db_path: str | Path, sql: str, out: TextIO, fmt: str = "table", *, preset: str | None = None
) -> int:
    """Run one read-only statement (or the preset so named, whose SQLite text `sql` is) and
    print its rows; returns the row count."""
    with open_results(str(db_path)) as reader:
        result = reader.run_query(reader.preset_sql(preset, sql) if preset else sql)
        return _write(fmt, result.columns, result.rows, out)


def _write(fmt: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]], out: TextIO) -> int:
    if fmt == "table":
        return write_table(columns, rows, out)
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        return _count(writer.writerow(row) for row in rows)
    if fmt == "json":
        out.write("[")
        n = 0
        for n, row in enumerate(rows, 1):
            out.write(
                ("\n  " if n == 1 else ",\n  ") + json.dumps(dict(zip(columns, row, strict=True)))
            )
        out.write("\n]\n" if n else "]\n")
        return n
    if fmt == "jsonl":
        return _count(
            out.write(json.dumps(dict(zip(columns, row, strict=True))) + "\n") for row in rows
        )
    raise QueryError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")


def write_table(columns: Sequence[str], rows: Iterable[tuple[Any, ...]], out: TextIO) -> int:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"({len(cells)} row{'s' if len(cells) != 1 else ''})\n")
    return len(cells)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _count(items: Iterator[Any]) -> int:
    return sum(1 for _ in items)
