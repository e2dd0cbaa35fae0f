"""A page as the columns of the pages table: the same on every backend."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scraper.models import CrawlRequest, ErrorKind, PageRecord

PAGE_COLUMNS = [
    "url", "crawl_id", "depth", "referrer", "status", "final_url", "content_type",
    "fetched_at", "elapsed_ms", "bytes", "attempts", "encoding", "title", "description",
    "canonical", "text_length", "text_hash", "text", "fields", "error_kind", "error", "etag",
    "last_modified", "links", "links_cut", "field_errors", "not_modified",
    "warc_file", "warc_offset", "warc_length", "warc_date", "warc_digest",
]  # fmt: skip


# A frontier row's request, beyond its URL, depth, referrer and hops: a spider's request's fields
# (models.CrawlRequest), each a column of the same name, NULL for a plain link.
REQUEST_COLUMNS = ("method", "headers", "body", "callback", "meta")


def request_values(request: CrawlRequest) -> tuple[Any, ...]:
    """The REQUEST_COLUMNS of a request."""
    return (request.method, request.headers, request.body, request.callback, request.meta)


def leased_request(row: Sequence[Any], recrawl_after: float) -> CrawlRequest:
    """A request from its frontier row: its identity (the `url` column), depth, referrer and
    hops, its REQUEST_COLUMNS, then its stored page's etag and last_modified, whether the
    page is younger than `recrawl_after` (0: none is), and its WARC record's date and digest."""
    identity, depth, referrer, hops, *rest = row
    n = len(REQUEST_COLUMNS)
    method, headers, body, callback, meta = rest[:n]
    etag, modified, fresh, warc_date, warc_digest = rest[n:]
    url, _, _ = identity.partition("#")  # a canonical URL has no fragment: only a key does
    return CrawlRequest(
        url=url,
        depth=depth,
        referrer=referrer,
        hops=hops,
        etag=etag,
        last_modified=modified,
        fresh=bool(fresh) and recrawl_after > 0,
        method=method,
        headers=headers,
        body=bytes(body) if body is not None else None,
        callback=callback,
        meta=meta,
        key=identity if url != identity else None,
        archived_date=warc_date,
        archived_digest=warc_digest,
    )


def item_rows(crawl_id: int, records: Sequence[PageRecord]) -> list[tuple[Any, ...]]:
    """(crawl_id, url, position, callback, data) for every item of the records' pages."""
    return [
        (crawl_id, r.fetch.request.identity, n, r.fetch.request.callback or "parse", data)
        for r in records
        if r.parsed is not None
        for n, data in enumerate(r.parsed.items)
    ]


def kept(record: PageRecord) -> bool:
    """The stored row stands: a 304, or a page fresher than crawl.recrawl_after."""
    return record.fetch.status == 304 or record.fetch.request.fresh


def page_row(crawl_id: int, record: PageRecord) -> tuple[Any, ...]:
    """A record as the values of PAGE_COLUMNS (a parse failure is the page's error)."""
    fetch, parsed = record.fetch, record.parsed
    error_kind, error = fetch.error_kind, fetch.error
    if record.parse_error is not None:
        error_kind, error = ErrorKind.PARSE, record.parse_error
    elif parsed is not None and parsed.callback_error is not None:
        error_kind, error = ErrorKind.CALLBACK, parsed.callback_error
    return (
        fetch.request.identity,
        crawl_id,
        fetch.request.depth,
        fetch.request.referrer,
        fetch.status,
        fetch.final_url,
        fetch.content_type,
        fetch.fetched_at,
        fetch.elapsed_ms,
        fetch.bytes,
        fetch.attempts,
        parsed.encoding if parsed else None,
        parsed.title if parsed else None,
        parsed.description if parsed else None,
        parsed.canonical if parsed else None,
        parsed.text_length if parsed else None,
        parsed.text_hash if parsed else None,
        parsed.text if parsed else None,
        parsed.fields_json if parsed else None,
        error_kind,
        error,
        fetch.etag,
        fetch.last_modified,
        parsed.links_json if parsed else None,
        parsed.links_cut if parsed else None,
        parsed.field_errors_json if parsed else None,
        None,  # not_modified: a page stored whole was modified (or new)
        *_archived(record),
    )


def _archived(record: PageRecord) -> tuple[Any, ...]:
    """Where the page's response record is in the WARC archive (storage.warc), or NULLs."""
    where = record.fetch.archived
    if where is None:
        return (None, None, None, None, None)
    return (where.file, where.offset, where.length, where.date, where.digest)
