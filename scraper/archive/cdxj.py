"""The CDXJ index of a crawl's WARC records (as pywb reads it), from the database alone.

One line per page row with an archived response record: its SURT key, its 14-digit timestamp,
then a JSON object (url, mime, status, digest, length, offset, filename), sorted by key and time
as pywb's binary search needs. The rows are held to be sorted (~300 bytes a page). A 304's
revisit record, robots.txt's and a redirect's records are in the files, not in this index (the
page row points at the response its content is); `cdxj-indexer` or pywb's `wb-manager add`
index the files whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
WWW = re.compile(r"^www\d*\.")


def surt(url: str) -> str:
    """The SURT key of a URL as pywb's canonicaliser makes it: lower case, host labels reversed
    (`www.` dropped), default port dropped, query arguments sorted, no fragment."""
    parts = urlsplit(url.lower())
    host = WWW.sub("", parts.hostname or "")
    labels = host.split(".")
    key = ",".join(reversed(labels))
    if parts.port is not None and parts.port != DEFAULT_PORTS.get(parts.scheme):
        key += f":{parts.port}"
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)), safe="/:,")
    return f"{key}){parts.path or '/'}" + (f"?{query}" if query else "")


def timestamp(warc_date: str) -> str:
    """`2026-12-08T01:02:03.456000Z` as `20261208010203`."""
    return re.sub(r"\D", "", warc_date)[:14]


def cdxj_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The index lines of the archived rows, sorted."""
    lines = []
    for row in rows:
        if not row.get("warc_file"):
            continue
        fields = {
            "url": row["url"],
            "mime": (row.get("content_type") or "unk").split(";", 1)[0].strip(),
            "status": str(row["status"]) if row.get("status") is not None else "-",
            "digest": (row.get("warc_digest") or "-").removeprefix("sha1:"),
            "length": str(row["warc_length"]),
            "offset": str(row["warc_offset"]),
            "filename": row["warc_file"],
        }
        key = f"{surt(row['url'])} {timestamp(row['warc_date'])}"
        lines.append(f"{key} {json.dumps(fields, ensure_ascii=False)}\n")
    lines.sort()
    return lines


def write_cdxj(rows: Iterable[dict[str, Any]], out: TextIO) -> int:
    lines = cdxj_lines(rows)
    out.writelines(lines)
    return len(lines)
