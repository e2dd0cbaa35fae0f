"""Encodings as the WHATWG Encoding Standard names and decodes them, in Python's codecs.

A label (`latin1`, `gb2312`, `utf-16`) maps to one of the standard's encodings by its table, which
`webencodings` keeps; the standard's names differ from what browsers did before it and from
Python's aliases where it matters: `iso-8859-1` and `ascii` are windows-1252, `gb2312` is GBK,
`utf-16` is UTF-16LE. Each encoding is then decoded by the Python codec that reads bytes as the
standard's decoder does, and recorded (`pages.encoding`) under that codec's Python name, as
before: `cp1252`, `utf-8`, `gbk`, `utf-16-le`.

Where Python's codec differs from the standard's decoder, the decoder wins: GBK decodes with the
gb18030 decoder (the standard has one for both), a lead byte 0x80 there is the euro sign, and the
bytes 0x80-0x9F that Python's windows-125x and windows-874 codecs leave undefined are the C1
controls of the same value (the standard's indexes map them so). Any other invalid byte becomes
U+FFFD, as it did with w3lib.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from functools import lru_cache

# Its stubs (types-webencodings) are not in the test extra: the four names used here are typed
# by the functions that wrap them.
import webencodings  # type: ignore[import-untyped]

# webencodings lists the standard's encoding names as labels too, and the standard does not:
# "replacement" names an encoding that no label reaches except the ISO-2022-KR family's.
_NOT_LABELS = frozenset({"replacement"})
# Encodings whose decoders do not read an ASCII byte as that ASCII character (UTF-16 pairs
# bytes; ISO-2022-JP switches on ESC; replacement reads nothing).
_NOT_ASCII_READERS = frozenset({"utf-16be", "utf-16le", "iso-2022-jp", "replacement"})
# The standard decodes GBK with its gb18030 decoder; Python's gbk codec rejects four-byte
# sequences and the euro sign's 0x80.
_DECODERS = {"gbk": "gb18030"}
_ERRORS = "scraper-whatwg-replace"


@dataclass(frozen=True, slots=True)
class Encoding:
    """One encoding as a page is decoded with it."""

    # What `pages.encoding` records: Python's name for the codec ("cp1252", "utf-8", "gbk"),
    # the standard's own for the two Python lacks ("replacement", "x-user-defined").
    name: str
    # The Python codec that decodes as the standard's decoder does (GBK: "gb18030").
    codec: str
    # Does the decoder read every ASCII byte as that ASCII character? Then an ASCII body is its
    # own UTF-8 and needs no decoding.
    ascii_reader: bool

    def decode(self, data: bytes) -> str:
        """`data` as text; an invalid byte is U+FFFD, as in the standard's decoders."""
        if self.codec == "replacement":
            # The standard's replacement decoder: one U+FFFD for the whole input.
            return "\ufffd" if data else ""
        if self.codec == "x-user-defined":
            return str(webencodings.lookup("x-user-defined").codec_info.decode(data)[0])
        return data.decode(self.codec, _ERRORS)


UTF8 = Encoding("utf-8", "utf-8", ascii_reader=True)
WINDOWS_1252 = Encoding("cp1252", "cp1252", ascii_reader=True)


# Labels come from pages, any string a page likes: the memo is bounded (real labels are ~220).
@lru_cache(maxsize=512)
def from_label(label: str) -> Encoding | None:
    """The standard's "get an encoding": the encoding `label` names (ASCII whitespace around it
    and ASCII case ignored), or None for a label the standard does not know."""
    found = webencodings.lookup(label)
    if found is None or label.strip("\t\n\f\r ").lower() in _NOT_LABELS:
        return None
    return _encoding(found.name)


def from_label_bytes(label: bytes) -> Encoding | None:
    """`from_label` for a label read from a page's bytes (isomorphic decoding: a byte is the code
    point of its value, so a non-ASCII byte makes a label no table knows)."""
    return from_label(label.decode("latin-1"))


@lru_cache(maxsize=64)
def from_python_name(name: str) -> Encoding | None:
    """A name a detector gave that is no label of the standard (chardet knows EBCDIC, which no
    browser reads): its Python codec, as before, or None where Python has none. UTF-7 is refused:
    it re-spells `<` and `>` in plain ASCII letters, so text a browser shows as text would decode
    into markup (w3lib refused it too)."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return None
    if codec == "utf-7":
        return None
    return Encoding(codec, codec, ascii_reader=False)


def _encoding(whatwg_name: str) -> Encoding:
    ascii_reader = whatwg_name not in _NOT_ASCII_READERS
    if whatwg_name in ("replacement", "x-user-defined"):
        return Encoding(whatwg_name, whatwg_name, ascii_reader)
    python = codecs.lookup(webencodings.PYTHON_NAMES.get(whatwg_name, whatwg_name)).name
    return Encoding(python, _DECODERS.get(python, python), ascii_reader)


def charset_parameter(content_type: str | None) -> str | None:
    """The `charset` parameter of a Content-Type value as the MIME Sniffing standard's "parse a
    MIME type" reads it: None when the value is no valid MIME type or has no charset; the first
    valid one when there are several; a quoted value unquoted."""
    if not content_type:
        return None
    kind, _, parameters = content_type.strip(_HTTP_WHITESPACE).partition(";")
    essence, slash, subtype = kind.partition("/")
    if not slash or not _is_token(essence) or not _is_token(subtype.rstrip(_HTTP_WHITESPACE)):
        return None
    while parameters:
        name, value, parameters = _next_parameter(parameters.lstrip(_HTTP_WHITESPACE))
        if name == "charset" and value is not None:
            return value
    return None


_HTTP_WHITESPACE = "\t\n\r "
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(text: str) -> bool:
    return bool(text) and all(char in _TOKEN for char in text)


def _next_parameter(text: str) -> tuple[str, str | None, str]:
    """(name, value or None when the parameter counts for nothing, the text after its `;`)."""
    name_end = min((i for i in (text.find(";"), text.find("=")) if i >= 0), default=len(text))
    name, rest = text[:name_end].lower(), text[name_end:]
    if not rest.startswith("="):
        return name, None, rest[1:]
    quoted = rest.startswith('="')
    if quoted:
        value, rest = _quoted_string(rest[2:])
        rest = rest.partition(";")[2]
    else:
        value, _, rest = rest[1:].partition(";")
        value = value.rstrip(_HTTP_WHITESPACE)
    # An empty unquoted value is skipped; an empty quoted one counts (and names no encoding).
    valid = (quoted or value) and _is_token(name) and all(map(_is_quoted_string_char, value))
    return name, value if valid else None, rest


def _is_quoted_string_char(char: str) -> bool:
    return char == "\t" or " " <= char <= "~" or "\x80" <= char <= "\xff"


def _quoted_string(text: str) -> tuple[str, str]:
    """Fetch's "collect an HTTP quoted string" after its opening quote, the value extracted:
    (value, the text after the closing quote)."""
    value: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(value), text[index + 1 :]
        if char == "\\":
            index += 1
            if index == len(text):
                value.append("\\")
                break
            char = text[index]
        value.append(char)
        index += 1
    return "".join(value), ""


def read_bom(body: bytes) -> tuple[Encoding, int] | None:
    """The standard's "BOM sniff": (the encoding, the BOM's length), or None."""
    if body[:3] == b"\xef\xbb\xbf":
        return UTF8, 3
    if body[:2] == b"\xfe\xff":
        return _encoding("utf-16be"), 2
    if body[:2] == b"\xff\xfe":
        return _encoding("utf-16le"), 2
    return None


def _replace_as_the_standard(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    byte = error.object[error.start]
    if error.encoding == "charmap" and 0x80 <= byte < 0xA0:
        return chr(byte), error.start + 1
    if error.encoding == "gb18030" and byte == 0x80:
        return "\u20ac", error.start + 1
    return "\ufffd", error.end


codecs.register_error(_ERRORS, _replace_as_the_standard)
