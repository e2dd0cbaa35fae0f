"""A page's encoding, and what to hand Lexbor: the body's own bytes whenever they can be.

The encoding is decided as the HTML Standard decides it: a byte order mark; else the charset of
the Content-Type (its label read by the Encoding Standard's table, `encoding.py`); else what the
first 1,024 bytes declare (the standard's prescan, `encoding_prescan.py`); else, where nothing is
declared, our guess: UTF-8 when the body is valid UTF-8, or chardet's answer. Unless a BOM or the
Content-Type chose, the first `<meta>` the parser meets that declares another encoding has the
page read again in that one, as the standard's "change the encoding" does.

Lexbor parses UTF-8. Given a `str`, selectolax encodes it back to UTF-8 first, so a body that is
already valid UTF-8 goes as the bytes it came as: no decode to `str` and no encode back (together
~1.9 ms of a 1.5 MB page with one non-ASCII character, where Lexbor's own parse takes ~0.7 ms).
Only a body in another encoding, or UTF-8 with invalid bytes, is decoded by Python (as the
standard's decoders read it) and handed over as text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from selectolax.lexbor import LexborHTMLParser, LexborNode

from scraper.parse.encoding import (
    UTF8,
    WINDOWS_1252,
    Encoding,
    charset_parameter,
    from_label,
    from_python_name,
    read_bom,
)
from scraper.parse.encoding_prescan import content_charset, prescan

# Bodies are checked for valid UTF-8 this many bytes at a time, skipping the all-ASCII pieces.
_CHUNK = 16_384
_UTF16 = frozenset({"utf-16-be", "utf-16-le"})


@dataclass(frozen=True, slots=True)
class Reading:
    """How a page's bytes are read, before its markup is."""

    encoding: Encoding
    body: bytes  # without its BOM
    # The BOM or the Content-Type said so; otherwise a `<meta>` the parser meets can change it.
    certain: bool


def parse_html(body: bytes, content_type: str | None) -> tuple[str, LexborHTMLParser]:
    """(the page's encoding as `pages.encoding` records it, its parsed tree)."""
    encoding, tree = read_and_parse(body, content_type, detect_encoding)
    return encoding.name, tree


def read_and_parse(
    body: bytes, content_type: str | None, guess: Callable[[bytes], Encoding]
) -> tuple[Encoding, LexborHTMLParser]:
    """The HTML Standard's reading of a page, `guess` where nothing declares an encoding.

    The parser has its say too: a `<meta>` it meets declaring another encoding than the one the
    page is read in, when nothing certain (BOM, Content-Type) chose that one, makes the standard
    read the page again in the declared one ("change the encoding"). Mostly that `<meta>` is
    the one the prescan found, and nothing changes; a page whose first 1,024 bytes are comments
    or scripts or styles declares later, and is read twice."""
    reading = first_reading(body, content_type, guess)
    tree = LexborHTMLParser(lexbor_input(reading.encoding, reading.body))
    if reading.certain or reading.encoding.codec in _UTF16:
        return reading.encoding, tree
    declared = meta_declaration(tree)
    if declared is None or declared == reading.encoding:
        return reading.encoding, tree
    return declared, LexborHTMLParser(lexbor_input(declared, reading.body))


def lexbor_source(body: bytes, content_type: str | None) -> tuple[str, bytes | str]:
    """(encoding, what Lexbor should parse) as the page's bytes alone decide them: `parse_html`
    without the parser's say."""
    reading = first_reading(body, content_type, detect_encoding)
    return reading.encoding.name, lexbor_input(reading.encoding, reading.body)


def first_reading(
    body: bytes, content_type: str | None, guess: Callable[[bytes], Encoding]
) -> Reading:
    """BOM, then the Content-Type's charset, then the prescan, then `guess`.

    A library that fails on this body (w3lib 2.6's prescan panicked, a BaseException, on any
    body ending in a cut-off `<meta`; chardet reads every undeclared page that is not UTF-8)
    costs the page its encoding, not its parse: its links can still be had as UTF-8 reads them."""
    try:
        bom = read_bom(body)
        if bom is not None:
            return Reading(bom[0], body[bom[1] :], certain=True)
        label = charset_parameter(content_type)
        declared = from_label(label) if label is not None else None
        if declared is not None:
            return Reading(declared, body, certain=True)
        return Reading(prescan(body) or guess(body), body, certain=False)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        return Reading(UTF8, body, certain=True)


def lexbor_input(encoding: Encoding, body: bytes) -> bytes | str:
    """The body's bytes when they are valid UTF-8 in `encoding`, or else the text decoded with
    it. Valid UTF-8 only: Lexbor and Python replace invalid bytes differently (around a NUL, a
    broken sequence can swallow it in Lexbor), so such a body goes as Python's text."""
    if encoding.codec == "utf-8" and is_utf8(body):
        return body
    if encoding.ascii_reader and body.isascii():
        return body
    return encoding.decode(body)


def meta_declaration(tree: LexborHTMLParser) -> Encoding | None:
    """The encoding the first `<meta>` the parser inserted declares (as the "in head" insertion
    mode reads it: a `charset` naming an encoding, or `http-equiv="content-type"` with a
    `content` holding one), or None. A `<meta>` inside `<noscript>` is text to a browser, which
    runs scripts, and declares nothing."""
    for node in tree.css("meta[charset], meta[http-equiv][content]"):
        declared = _declared_by(node)
        if declared is not None and not _in_noscript(node):
            if declared.codec in _UTF16:
                return UTF8
            return WINDOWS_1252 if declared.codec == "x-user-defined" else declared
    return None


def _declared_by(meta: LexborNode) -> Encoding | None:
    attributes = meta.attributes
    charset = attributes.get("charset")
    if charset is not None:
        found = from_label(charset)
        if found is not None:
            return found
    pragma = attributes.get("http-equiv")
    content = attributes.get("content")
    if pragma is None or content is None or pragma.lower() != "content-type":
        return None
    return content_charset(content.encode("utf-8", "surrogatepass").lower())


def _in_noscript(node: LexborNode) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag == "noscript":
            return True
        parent = parent.parent
    return False


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


def detect_encoding(body: bytes) -> Encoding:
    """Our guess where nothing is declared (the standard leaves it to the browser): UTF-8 when
    the body is valid UTF-8, else chardet's answer read as a label of the standard, or as a
    Python codec's name where the standard has no such label, else UTF-8."""
    if is_utf8(body):
        return UTF8
    # chardet, not charset-normalizer: the latter reads plain French latin-1 as cp1257.
    # Imported here: most pages declare their encoding, and a worker starts sooner without.
    import chardet

    guess = chardet.detect(body[:65536]).get("encoding")
    if guess is None:
        return UTF8
    found = from_label(guess)
    # The replacement encoding is for a declared ISO-2022-KR or HZ, which a browser refuses to
    # read; a guess of one is the guesser's reading of the bytes, so Python's codec reads them.
    if found is None or found.name == "replacement":
        found = from_python_name(guess)
    return found or UTF8
