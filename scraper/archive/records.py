"""An Exchange as WARC 1.1 records, each one gzip member (run in the archive's writer process).

warcio builds the records (headers, record ids, the block and payload digests); we compress each
record ourselves as one gzip member with ISA-L at level 1 (`isal`): warcio's own writer uses
zlib at level 9, ~115 ms for a 1.5 MB page, against ~7 ms here for a member ~35% larger than
zlib's level 6 would make (the bench's pages; the CPU per page of a crawl is what matters).

A response is two records, the response then its request (WARC-Concurrent-To the response); a
304 to a conditional request is a revisit record (profile server-not-modified) that refers to
the stored page's response record by URI and date, and carries its payload digest.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass

from isal import isal_zlib
from warcio.statusandheaders import StatusAndHeaders, StatusAndHeadersParser
from warcio.warcwriter import BaseWARCWriter

from scraper.models import Exchange

WARC_VERSION = "1.1"
SERVER_NOT_MODIFIED = "http://netpreserve.org/warc/1.1/revisit/server-not-modified"
GZIP_LEVEL = 1
GZIP_WBITS = 16 + isal_zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream
REDACTED = "[redacted]"
REDACTED_ALWAYS = frozenset({"proxy-authorization"})
REDACTED_IF_ASKED = frozenset({"authorization", "cookie"})


@dataclass(frozen=True, slots=True)
class Member:
    """One record as the bytes of its gzip member; `capture`: it is the exchange's response
    (or revisit) record, whose place the database keeps, with its date and payload digest."""

    data: bytes
    capture: bool = False
    date: str = ""
    digest: str = ""


class _Writer(BaseWARCWriter):  # type: ignore[misc]
    """warcio's record writing into a buffer, uncompressed (we compress)."""

    def __init__(self) -> None:
        super().__init__(gzip=False, warc_version=WARC_VERSION)

    def serialize(self, record: object) -> bytes:
        out = io.BytesIO()
        self._write_warc_record(out, record)
        return out.getvalue()


_WRITER: _Writer | None = None
_PARSER = StatusAndHeadersParser([], verify=False)


def _writer() -> _Writer:
    global _WRITER
    if _WRITER is None:
        _WRITER = _Writer()
    return _WRITER


def gzip_member(data: bytes) -> bytes:
    compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


def warcinfo(filename: str, fields: dict[str, str]) -> bytes:
    """The warcinfo record that opens each file, as its gzip member."""
    writer = _writer()
    record = writer.create_warcinfo_record(filename, fields)
    return gzip_member(writer.serialize(record))


def exchange_members(exchange: Exchange, redact_auth: bool = True) -> list[Member]:
    """The records of one exchange, as gzip members, the capture (response or revisit) first;
    `redact_auth` (storage.warc_redact_auth): the request's credentials and cookies not kept."""
    writer = _writer()
    date = warc_date(exchange.date)
    common = {"WARC-Date": date}
    if exchange.ip:
        common["WARC-IP-Address"] = exchange.ip
    response_headers = _http_headers(exchange.response_head)
    if exchange.revisit_of is not None:
        refers_date, digest = exchange.revisit_of
        capture = writer.create_revisit_record(
            exchange.url,
            digest,
            exchange.url,
            refers_date,
            http_headers=response_headers,
            warc_headers_dict=dict(common),
        )
        capture.rec_headers.replace_header("WARC-Profile", SERVER_NOT_MODIFIED)
    else:
        headers = dict(common)
        if exchange.truncated:
            headers["WARC-Truncated"] = exchange.truncated
        headers.update(_digests(response_headers, exchange.body))
        capture = writer.create_warc_record(
            exchange.url,
            "response",
            payload=io.BytesIO(exchange.body),
            length=len(exchange.body),
            warc_headers_dict=headers,
            http_headers=response_headers,
        )
    captured = writer.serialize(capture)
    digest = capture.rec_headers.get_header("WARC-Payload-Digest") or ""
    request_headers = dict(common)
    request_headers["WARC-Concurrent-To"] = capture.rec_headers.get_header("WARC-Record-ID")
    request = writer.create_warc_record(
        exchange.url,
        "request",
        warc_headers_dict=request_headers,
        http_headers=_redacted(_http_headers(exchange.request_head), redact_auth),
    )
    return [
        Member(gzip_member(captured), capture=True, date=date, digest=digest),
        Member(gzip_member(writer.serialize(request))),
    ]


def warc_date(stored: str) -> str:
    """A stored time (`2026-12-08T01:02:03.456+00:00`, utc_now's) as a WARC-Date
    (`2026-12-08T01:02:03.456000Z`, WARC 1.1's fractional seconds)."""
    base, _, fraction = stored.removesuffix("+00:00").removesuffix("Z").partition(".")
    return f"{base}.{fraction.ljust(6, '0')[:6]}Z"


def _digests(http: StatusAndHeaders, body: bytes) -> dict[str, str]:
    """A response record's block and payload digests, made here in two hashlib calls each:
    warcio makes them by feeding the body through Python in 16 KB pieces, a pass per digest
    (about a third of a record's writing time on 40 KB pages)."""
    http.compute_headers_buffer(None)  # the head as warcio will write it
    block = hashlib.sha1(http.headers_buff)
    block.update(body)
    return {
        "WARC-Block-Digest": _base32(block.digest()),
        "WARC-Payload-Digest": _base32(hashlib.sha1(body).digest()),
    }


def _base32(digest: bytes) -> str:
    return "sha1:" + base64.b32encode(digest).decode("ascii")


def _redacted(headers: StatusAndHeaders, redact_auth: bool) -> StatusAndHeaders:
    """A request's headers with the secrets' values replaced: a proxy's credentials always (the
    crawler's, never the site's business), the site's credentials and cookies if asked."""
    secret = REDACTED_ALWAYS | (REDACTED_IF_ASKED if redact_auth else frozenset())
    headers.headers = [
        (name, REDACTED if name.lower() in secret else value) for name, value in headers.headers
    ]
    return headers


def _http_headers(head: bytes) -> StatusAndHeaders:
    """A head (a status or request line, and headers) as warcio's StatusAndHeaders."""
    parsed: StatusAndHeaders = _PARSER.parse(io.BytesIO(head))
    return parsed
