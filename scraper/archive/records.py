"""An Exchange as WARC 1.1 records, each one gzip member (run in the archive's writer process).

A response is two records, the response then its request (WARC-Concurrent-To the response); a
304 to a conditional request is a revisit record (profile server-not-modified) that refers to
the stored page's response record by URI and date, and carries its payload digest.

warcio builds the warcinfo and revisit records. The response and request records, one of each
per fetch, are laid out here, in the very format warcio writes (`warcio check` reads every file
the tests make): through warcio's record builder and writer they cost ~220 µs of CPU per 40 KB
page, ~125 µs of it in Python around the work itself (parsing the heads back into header lists,
16 KB copies, the digests fed a piece at a time, base 32 in pure Python), which made archiving
1.29x the crawl's CPU per page on the bench's cpu case. The heads go in as they came on the wire.

Each record is compressed as one gzip member with ISA-L at level 1 (`isal`): 46 µs of CPU for a
40 KB page where zlib at level 1 takes 123 µs (warcio's own writer uses zlib at level 9), for a
member 24% of the page against zlib level 6's 19%.
"""

from __future__ import annotations

import base64
import hashlib
import io
import uuid
from dataclasses import dataclass

from isal import isal_zlib
from warcio.statusandheaders import StatusAndHeadersParser
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
    date = warc_date(exchange.date)
    common = [("WARC-Date", date)]
    if exchange.ip:
        common.append(("WARC-IP-Address", exchange.ip))
    if exchange.revisit_of is not None:
        record_id, data, digest = _revisit(exchange, common)
    else:
        record_id, data, digest = _response(exchange, common)
    request = _record(
        "request",
        exchange.url,
        [*common, ("WARC-Concurrent-To", record_id)],
        "application/http; msgtype=request",
        _redacted(exchange.request_head, redact_auth),
        b"",
    )[1]
    return [Member(data, capture=True, date=date, digest=digest), Member(request)]


def _response(exchange: Exchange, common: list[tuple[str, str]]) -> tuple[str, bytes, str]:
    head, body = exchange.response_head, exchange.body
    payload = _base32(hashlib.sha1(body).digest())
    block = hashlib.sha1(head)
    block.update(body)
    headers = [*common]
    if exchange.truncated:
        headers.append(("WARC-Truncated", exchange.truncated))
    headers += [("WARC-Block-Digest", _base32(block.digest())), ("WARC-Payload-Digest", payload)]
    record_id, data = _record(
        "response", exchange.url, headers, "application/http; msgtype=response", head, body
    )
    return record_id, data, payload


def _record(
    kind: str, url: str, headers: list[tuple[str, str]], content_type: str, head: bytes, body: bytes
) -> tuple[str, bytes]:
    """A record (its id, its gzip member) of an HTTP head and body, laid out as warcio's
    writer lays it out. A request's block digest is made here; a response's is given."""
    record_id = f"<urn:uuid:{uuid.uuid4()}>"
    if not any(name == "WARC-Block-Digest" for name, _ in headers):
        headers = [*headers, ("WARC-Block-Digest", _base32(hashlib.sha1(head + body).digest()))]
    lines = [
        "WARC/1.1",
        f"WARC-Type: {kind}",
        f"WARC-Record-ID: {record_id}",
        f"WARC-Target-URI: {url}",
        *(f"{name}: {value}" for name, value in headers),
        f"Content-Type: {content_type}",
        f"Content-Length: {len(head) + len(body)}",
    ]
    compressor = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, GZIP_WBITS)
    parts = [
        compressor.compress(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")),
        compressor.compress(head),
        compressor.compress(body),
        compressor.compress(b"\r\n\r\n"),
        compressor.flush(),
    ]
    return record_id, b"".join(parts)


def _revisit(exchange: Exchange, common: list[tuple[str, str]]) -> tuple[str, bytes, str]:
    """A 304's revisit record (warcio's), referring to the stored page's response record."""
    writer = _writer()
    refers_date, digest = exchange.revisit_of or ("", "")
    capture = writer.create_revisit_record(
        exchange.url,
        digest,
        exchange.url,
        refers_date,
        http_headers=_PARSER.parse(io.BytesIO(exchange.response_head)),
        warc_headers_dict=dict(common),
    )
    capture.rec_headers.replace_header("WARC-Profile", SERVER_NOT_MODIFIED)
    data = gzip_member(writer.serialize(capture))
    return capture.rec_headers.get_header("WARC-Record-ID"), data, digest


def warc_date(stored: str) -> str:
    """A stored time (`2026-12-08T01:02:03.456+00:00`, utc_now's) as a WARC-Date
    (`2026-12-08T01:02:03.456000Z`, WARC 1.1's fractional seconds)."""
    base, _, fraction = stored.removesuffix("+00:00").removesuffix("Z").partition(".")
    return f"{base}.{fraction.ljust(6, '0')[:6]}Z"


def _base32(digest: bytes) -> str:
    return "sha1:" + base64.b32encode(digest).decode("ascii")


def _redacted(head: bytes, redact_auth: bool) -> bytes:
    """A request's head with the secrets' values replaced: a proxy's credentials always (the
    crawler's, never the site's business), the site's credentials and cookies if asked."""
    secret = REDACTED_ALWAYS | (REDACTED_IF_ASKED if redact_auth else frozenset())
    lines = head.split(b"\r\n")
    for n, line in enumerate(lines):
        name, colon, _ = line.partition(b":")
        if colon and name.strip().lower().decode("latin-1") in secret:
            lines[n] = name + b": " + REDACTED.encode()
    return b"\r\n".join(lines)
