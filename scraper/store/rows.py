"""A page as the columns of the pages table: the same on every backend."""

from __future__ import annotations

from typing import Any

from scraper.models import ErrorKind, PageRecord

PAGE_COLUMNS = [
    "url", "crawl_id", "depth", "referrer", "status", "final_url", "content_type",
    "fetched_at", "elapsed_ms", "bytes", "attempts", "encoding", "title", "description",
    "canonical", "text_length", "text_hash", "text", "fields", "error_kind", "error", "etag",
    "last_modified", "links", "links_cut", "field_errors", "not_modified",
    "warc_file", "warc_offset", "warc_length", "warc_date", "warc_digest",
]  # fmt: skip


def kept(record: PageRecord) -> bool:
    """The stored row stands: a 304, or a page fresher than crawl.recrawl_after."""
    return record.fetch.status == 304 or record.fetch.request.fresh


def page_row(crawl_id: int, record: PageRecord) -> tuple[Any, ...]:
    """A record as the values of PAGE_COLUMNS (a parse failure is the page's error)."""
    fetch, parsed = record.fetch, record.parsed
    error_kind, error = fetch.error_kind, fetch.error
    if record.parse_error is not None:
        error_kind, error = ErrorKind.PARSE, record.parse_error
    return (
        fetch.request.url,
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
