"""Output formats of the read side: a table for the terminal, CSV for spreadsheets, JSON.

Everything in a results database came from the web, so each format guards its reader:
- the table escapes control characters (`terminal.visible`): a title cannot clear the screen;
- CSV neutralises cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab,
  carriage return at the start) with a leading `'`, as OWASP advises, unless asked not to
  (`formulas=True`, for machines that read the CSV back);
- JSON escapes control characters by itself.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

from scraper.terminal import visible

MAX_CELL = 80
# Rows the table reads before it fixes its column widths; the rest stream through with them, so
# a query of millions of rows prints in constant memory (600,000 rows held took 223 MB).
WIDTH_SAMPLE = 1000
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def write_table(columns: Sequence[str], rows: Iterable[tuple[Any, ...]], out: TextIO) -> int:
    """Rows as aligned columns, widths from the first WIDTH_SAMPLE rows; returns the count."""
    stream = iter(rows)
    head = [[table_cell(v) for v in row] for row in itertools.islice(stream, WIDTH_SAMPLE)]
    names = [table_cell(c) for c in columns]
    widths = [max([len(c), *(len(r[i]) for r in head)]) for i, c in enumerate(names)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)).rstrip() + "\n"

    out.write(line(names))
    out.write("  ".join("-" * w for w in widths) + "\n")
    count = 0
    for cells in itertools.chain(head, ([table_cell(v) for v in row] for row in stream)):
        out.write(line(cells))
        count += 1
    out.write(f"({count} row{'s' if count != 1 else ''})\n")
    return count


def table_cell(value: Any) -> str:
    """A value as one short, terminal-safe line."""
    text = "" if value is None else str(value).replace("\n", " ").replace("\t", " ")
    text = text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"
    return visible(text)


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: one that would start a formula gets a `'`."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    out: TextIO,
    *,
    formulas: bool = False,
) -> int:
    """A header and the rows; cells neutralised unless `formulas`. Returns the row count."""
    writer = csv.writer(out)
    writer.writerow([cell if formulas else spreadsheet_safe(cell) for cell in columns])
    count = 0
    for row in rows:
        writer.writerow(row if formulas else [spreadsheet_safe(cell) for cell in row])
        count += 1
    return count


def write_json(columns: Sequence[str], rows: Iterable[tuple[Any, ...]], out: TextIO) -> int:
    out.write("[")
    n = 0
    for n, row in enumerate(rows, 1):
        record = json.dumps(dict(zip(columns, row, strict=True)))
        out.write(("\n  " if n == 1 else ",\n  ") + record)
    out.write("\n]\n" if n else "]\n")
    return n


def write_jsonl(columns: Sequence[str], rows: Iterable[tuple[Any, ...]], out: TextIO) -> int:
    return _count(
        out.write(json.dumps(dict(zip(columns, row, strict=True))) + "\n") for row in rows
    )


def _count(items: Iterator[Any]) -> int:
    return sum(1 for _ in items)
