"""A page's encoding, and what to hand Lexbor: the body's own bytes whenever they can be.

Lexbor parses UTF-8. Given a `str`, selectolax encodes it back to UTF-8 first, so a body that is
already valid UTF-8 goes as the bytes it came as: no decode to `str` and no encode back (together
~1.9 ms of a 1.5 MB page with one non-ASCII character, where Lexbor's own parse takes ~0.7 ms).
Only a body in another encoding, or UTF-8 with invalid bytes, is decoded by Python, as w3lib's
`html_to_unicode` does it, and handed over as text.
"""

from __future__ import annotations

import codecs

from w3lib.encoding import (
    html_body_declared_encoding,
    http_content_type_encoding,
    read_bom,
    to_unicode,
)

# Encodings that read ASCII bytes as the same characters UTF-8 does: an ASCII-only body declared
# in one of them is also its own UTF-8.
_ASCII_READERS = frozenset({"ascii", "cp1252", "iso8859-1", "iso8859-15", "cp1250", "cp1251"})
# Bodies are checked for valid UTF-8 this many bytes at a time, skipping the all-ASCII pieces.
_CHUNK = 16_384


def lexbor_source(body: bytes, content_type: str | None) -> tuple[str, bytes | str]:
    """(encoding, what Lexbor should parse): the encoding as `html_to_unicode` names it (BOM, then
    the HTTP charset, then `<meta charset>`, then detection), and the body's bytes when they are
    valid UTF-8 in that encoding (BOM removed), or else the text decoded as w3lib decodes it.

    Valid UTF-8 only: Lexbor and Python replace invalid bytes differently (around a NUL, a
    broken sequence can swallow it in Lexbor), so such a body goes as Python's text, as before."""
    try:
        encoding, data = _sniff(body, content_type)
    except (KeyboardInterrupt, SystemExit):
        raise
    # A library that fails on this body (w3lib 2.6's prescan panicked, a BaseException, on any
    # body ending in a cut-off `<meta`) costs the page its declared encoding, not its parse:
    # its links can still be had as UTF-8 reads them.
    except BaseException:
        encoding, data = "utf-8", body
    name = codecs.lookup(encoding).name
    if name == "utf-8" and is_utf8(data):
        return encoding, data
    if name in _ASCII_READERS and data.isascii():
        return encoding, data
    return encoding, to_unicode(data, encoding)


def _sniff(body: bytes, content_type: str | None) -> tuple[str, bytes]:
    """(encoding, the body without its BOM)."""
    bom_encoding, bom = read_bom(body)
    if bom_encoding is not None and bom is not None:
        return bom_encoding, body[len(bom) :]
    # html_to_unicode's order and names exactly, so `pages.encoding` does not change.
    found = http_content_type_encoding(content_type) or html_body_declared_encoding(body)
    if found is None:
        found = _detect_encoding(body)
    if found is None:
        found = "utf8"
    elif found in ("utf-16", "utf-32"):
        found += "-be"
    return found, body


def decode_html(body: bytes, content_type: str | None) -> tuple[str, str]:
    """(encoding, text): `lexbor_source`'s encoding, and the body decoded with it as text."""
    encoding, source = lexbor_source(body, content_type)
    return encoding, source if isinstance(source, str) else source.decode("utf-8")


def is_utf8(data: bytes) -> bool:
    """Is `data` valid UTF-8? As `data.decode("utf-8")` would say, without building the text.

    Decoding a 1.5 MB page to `str` costs ~0.45 ms (more the more of it is not ASCII), and the
    text is thrown away. Here the body is checked in pieces: `bytes.isascii` passes an ASCII piece
    at memory speed, and only the others are decoded (0.16 ms for that page). Pieces are cut just
    before a byte that starts a character (not 10xxxxxx), so each cut falls between characters of
    valid UTF-8: the whole is valid exactly when every piece is. A cut that finds four
    continuation bytes in a row is not valid UTF-8 anyway, and its next piece says so."""
    if data.isascii():
        return True
    size, start = len(data), 0
    while start < size:
        end = start + _CHUNK
        for _ in range(3):  # a character has at most three continuation bytes
            if end < size and 0x80 <= data[end] < 0xC0:
                end += 1
        piece = data[start:end]
        if not piece.isascii():
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError:
                return False
        start = end
    return True


def _detect_encoding(body: bytes) -> str | None:
    if is_utf8(body):
        return "utf-8"
    # chardet, not charset-normalizer: the latter reads plain French latin-1 as cp1257.
    # Imported here: most pages declare their encoding, and a worker starts sooner without.
    import chardet

    return chardet.detect(body[:65536]).get("encoding")
