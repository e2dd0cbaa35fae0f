"""`scraper export`: every page with its extracted fields, or with `--items` every item a
spider yielded, as JSON lines or CSV, streamed; or the CDXJ index of the pages' WARC records
(storage.warc; `archive/cdxj.py`).

Rows go from the database's cursor to the output one at a time, so memory stays flat for any
database size. JSON lines keep the data's shape (`fields`, `links` as JSON values); CSV, made for
spreadsheets, gives each extracted field a column of its own (`fields.price`; a list as JSON).
Items are written as the spider yielded them: a JSON line each, or in CSV a column per key (in
the order keys first appear; a list or an object as JSON), which costs a second pass over the
items (the first finds the keys), never memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from scraper.archive.cdxj import write_cdxj
from scraper.results.formats import write_csv
from scraper.store import open_results

FORMATS = ("jsonl", "csv", "cdxj")
JSON_COLUMNS = ("fields", "field_errors", "links")  # stored as JSON text; exported as JSON values
FIELD_PREFIX = "fields."


def export(
    db: str | Path,
    out: TextIO,
    fmt: str = "jsonl",
    crawl_id: int | None = None,
    *,
    formulas: bool = False,
) -> int:
    """Write the pages (of one crawl, or all) to `out`; returns how many. CSV cells that would
    start a spreadsheet formula are neutralised unless `formulas` (formats.spreadsheet_safe)."""
    with open_results(str(db)) as reader:
        if crawl_id is not None:
            reader.find_crawl(crawl_id)  # a clear error for a crawl that is not there
        pages = reader.pages(crawl_id)
        rows = (dict(zip(pages.columns, row, strict=True)) for row in pages.rows)
        if fmt == "cdxj":
            return write_cdxj(rows, out)
        if fmt == "csv":
            names = reader.field_names(crawl_id)
            return _write_csv(rows, names, pages.columns, out, formulas=formulas)
        return _write_jsonl(rows, out)


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
    rows: Iterator[dict[str, Any]],
    names: list[str],
    columns: list[str],
    out: TextIO,
    *,
    formulas: bool,
) -> int:
    page_columns = [c for c in columns if c not in ("id", "fields")]
    header = [*page_columns, *(FIELD_PREFIX + name for name in names)]

    def cells() -> Iterator[list[Any]]:
        for row in rows:
            fields = json.loads(row["fields"]) if row["fields"] else {}
            yield [*(row[c] for c in page_columns), *(_cell(fields.get(name)) for name in names)]

    return write_csv(header, cells(), out, formulas=formulas)


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value


def export_items(
    db: str | Path,
    out: TextIO,
    fmt: str = "jsonl",
    crawl_id: int | None = None,
    *,
    formulas: bool = False,
) -> int:
    """Write the items (of one crawl, or all) to `out`, in the order stored; returns how many.
    CSV cells that would start a spreadsheet formula are neutralised unless `formulas`."""
    with open_results(str(db)) as reader:
        if crawl_id is not None:
            reader.find_crawl(crawl_id)
        if fmt == "csv":
            keys: dict[str, None] = {}
            for item in _items(reader.items(crawl_id).rows):
                keys.update(dict.fromkeys(item))
            header = list(keys)
            cells = (
                [_cell(item.get(k)) for k in header] for item in _items(reader.items(crawl_id).rows)
            )
            return write_csv(header, cells, out, formulas=formulas)
        count = 0
        for row in reader.items(crawl_id).rows:
            out.write(row[4] + "\n")  # stored as the worker encoded it: JSON, one line
            count += 1
        return count


def _items(rows: Iterator[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    for row in rows:
        item = json.loads(row[4])
        yield item if isinstance(item, dict) else {"item": item}
