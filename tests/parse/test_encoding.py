"""Encodings by the standards: the label table, the Content-Type's charset, the decoders, the
prescan's quirks, a late `<meta>`, and the order BOM → Content-Type → prescan → guess."""

from __future__ import annotations

import codecs

import pytest
import webencodings

from scraper.parse.encoding import (
    WINDOWS_1252,
    charset_parameter,
    from_label,
    from_python_name,
)
from scraper.parse.encoding_prescan import prescan
from scraper.parse.source import detect_encoding, parse_html, read_and_parse

# The Encoding Standard's labels for the encodings whose names matter most to pages, as its
# encodings.json lists them today (the UTF-16 and UTF-8 ones added since 2017 included).
STANDARD = {
    "utf-8": ["unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8",
              "x-unicode20utf8"],
    "windows-1252": ["ansi_x3.4-1968", "ascii", "cp1252", "cp819", "csisolatin1", "ibm819",
                     "iso-8859-1", "iso-ir-100", "iso8859-1", "iso88591", "iso_8859-1",
                     "iso_8859-1:1987", "l1", "latin1", "us-ascii", "windows-1252", "x-cp1252"],
    "gbk": ["chinese", "csgb2312", "csiso58gb231280", "gb2312", "gb_2312", "gb_2312-80", "gbk",
            "iso-ir-58", "x-gbk"],
    "gb18030": ["gb18030"],
    "big5": ["big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5"],
    "shift_jis": ["csshiftjis", "ms932", "ms_kanji", "shift-jis", "shift_jis", "sjis",
                  "windows-31j", "x-sjis"],
    "euc-jp": ["cseucpkdfmtjapanese", "euc-jp", "x-euc-jp"],
    "euc-kr": ["cseuckr", "csksc56011987", "euc-kr", "iso-ir-149", "korean", "ks_c_5601-1987",
               "ks_c_5601-1989", "ksc5601", "ksc_5601", "windows-949"],
    "windows-874": ["dos-874", "iso-8859-11", "iso8859-11", "iso885911", "tis-620",
                    "windows-874"],
    "windows-1254": ["cp1254", "csisolatin5", "iso-8859-9", "iso-ir-148", "iso8859-9",
                     "iso88599", "iso_8859-9", "iso_8859-9:1989", "l5", "latin5",
                     "windows-1254", "x-cp1254"],
    "utf-16le": ["csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff", "utf-16",
                 "utf-16le"],
    "utf-16be": ["unicodefffe", "utf-16be"],
    "replacement": ["csiso2022kr", "hz-gb-2312", "iso-2022-cn", "iso-2022-cn-ext",
                    "iso-2022-kr"],
    "x-user-defined": ["x-user-defined"],
}  # fmt: skip

# What `pages.encoding` records for each: Python's codec names, as before where the standard
# did not move a label (gbk and utf-16-le are the two it moved).
NAMES = {
    "utf-8": "utf-8", "windows-1252": "cp1252", "gbk": "gbk", "gb18030": "gb18030",
    "big5": "big5hkscs", "shift_jis": "cp932", "euc-jp": "euc_jp", "euc-kr": "cp949",
    "windows-874": "cp874", "windows-1254": "cp1254", "utf-16le": "utf-16-le",
    "utf-16be": "utf-16-be", "replacement": "replacement", "x-user-defined": "x-user-defined",
}  # fmt: skip


def test_the_label_table_is_the_standard_s() -> None:
    for encoding, labels in STANDARD.items():
        for label in labels:
            assert webencodings.lookup(label).name == encoding, label
            found = from_label(f" \t{label.upper()}\n")
            assert found is not None and found.name == NAMES[encoding], label


def test_names_that_are_no_labels_name_nothing() -> None:
    # webencodings accepts the encoding name "replacement" as a label; the standard does not.
    for label in ("replacement", "utf-32", "utf-7", "x-unknown", "", "utf-8;", "latin 1"):
        assert from_label(label) is None, label


def test_a_guess_the_standard_does_not_know_is_python_s_codec_but_utf_7() -> None:
    found = from_python_name("cp500")
    assert found is not None and (found.name, found.decode(b"\xc1")) == ("cp500", "A")
    assert from_python_name("utf-7") is None
    assert from_python_name("no-such-codec") is None


@pytest.mark.parametrize(
    ("content_type", "charset"),
    [
        ("text/html; charset=ISO-8859-4", "ISO-8859-4"),
        ('text/html;charset="utf-8"', "utf-8"),
        ('text/html; charset="sh\\ift_jis"; x=y', "shift_jis"),
        ("text/html; charset=utf-8; charset=latin1", "utf-8"),  # the first wins
        ("text/html; x=1; CHARSET=koi8-r ", "koi8-r"),
        ("text/html; charset=; charset=gbk", "gbk"),  # an empty bare value is skipped
        ('text/html; charset=""; charset=gbk', ""),  # an empty quoted one is not
        ('text/html; foo="a;charset=big5"; charset=euc-kr', "euc-kr"),  # quoted ; is no end
        ("text/html", None),
        ("charset=utf-8", None),  # no MIME type
        ("text/html charset=utf-8", None),
        ("text /html; charset=utf-8", None),
        ("Content-Type: text/html; charset=utf-8", None),
        ("text/html; charset utf-8", None),
        ("", None),
        (None, None),
    ],
)
def test_the_charset_parameter_as_mime_sniffing_parses_it(
    content_type: str | None, charset: str | None
) -> None:
    assert charset_parameter(content_type) == charset


def test_decoders_follow_the_standard_where_python_s_codecs_differ() -> None:
    # GBK decodes with the gb18030 decoder: four-byte sequences, and 0x80 is the euro sign.
    gbk = from_label("gb2312")
    assert gbk is not None
    assert gbk.decode("中文😀".encode("gb18030") + b"\x80") == "中文😀€"
    # windows-1252's five bytes Python leaves undefined are C1 controls; so in its siblings.
    cp1252 = from_label("latin1")
    assert cp1252 is not None
    assert cp1252.decode(b"\x80\x81\x8d\x8f\x90\x9d\x9f") == "€\x81\x8d\x8f\x90\x9dŸ"
    for label in ("windows-1250", "windows-1251", "windows-1253", "windows-1254", "windows-1255",
                  "windows-1257", "windows-1258", "windows-874"):  # fmt: skip
        found = from_label(label)
        assert found is not None
        assert "\ufffd" not in found.decode(bytes(range(0x80, 0xA0))), label
    # windows-1253's 0xAA is unmapped in the standard's index too; other bad bytes stay U+FFFD.
    greek = from_label("windows-1253")
    assert greek is not None and greek.decode(b"\x81\xaa") == "\x81\ufffd"
    assert from_label("utf-8").decode(b"a\xffb\xe2\x82") == "a\ufffdb\ufffd"  # type: ignore[union-attr]
    # The two Python has no codec for.
    assert from_label("x-user-defined").decode(b"a\x80\xff") == "a\uf780\uf7ff"  # type: ignore[union-attr]
    assert from_label("iso-2022-kr").decode(b"<a href=x>") == "\ufffd"  # type: ignore[union-attr]
    assert from_label("iso-2022-kr").decode(b"") == ""  # type: ignore[union-attr]


def test_ascii_readers_read_ascii_as_ascii() -> None:
    """`ascii_reader` lets an ASCII body skip decoding: it must be true only where decoding
    ASCII bytes gives the same text."""
    ascii_bytes = bytes(range(0x80))
    for label in {encoding: labels[0] for encoding, labels in STANDARD.items()}.values():
        found = from_label(label)
        assert found is not None
        if found.ascii_reader:
            assert found.decode(ascii_bytes) == ascii_bytes.decode("ascii"), label
        assert found.ascii_reader or found.name in ("utf-16-le", "utf-16-be", "replacement")
    assert not from_label("iso-2022-jp").ascii_reader  # type: ignore[union-attr]


def name(body: bytes) -> str | None:
    found = prescan(body)
    return found.name if found is not None else None


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'<meta charset="gb2312">', "gbk"),
        (b"<META CHARSET=UTF-16>", "utf-8"),  # UTF-16 declared in ASCII bytes cannot be
        (b"<meta charset=x-user-defined>", "cp1252"),
        (b"<meta charset=iso-2022-kr>", "replacement"),
        (b"<meta charset=replacement><meta charset=koi8-r>", "koi8-r"),
        (b'<meta http-equiv="Content-Type" content="text/html; charset=euc-jp">', "euc_jp"),
        (b'<meta content="text/html; charset=euc-jp" http-equiv=content-type>', "euc_jp"),
        # The header's name with a stray space is another header; without the pragma, a content
        # attribute declares nothing.
        (b'<meta http-equiv="content-type " content="charset=euc-jp">', None),
        (b'<meta content="charset=euc-jp">', None),
        (b'<meta http-equiv=content-type http-equiv=x content="charset=euc-jp">', "euc_jp"),
        (b"<meta charset=bogus content='charset=euc-jp' http-equiv=content-type>", None),
        (b"<meta charset=bogus><meta charset=big5>", "big5hkscs"),
        (b'<meta http-equiv=content-type content="charset=\'euc-jp">', None),  # unmatched
        (b'<meta http-equiv=content-type content="charsetx charset = koi8-u;x">', "koi8-u"),
        # Tags are read without knowing them: a script's or a style's text counts, a comment's
        # does not, and another tag's attributes swallow a <meta>.
        (b"<script>var m = '<meta charset=koi8-r>'</script>", "koi8-r"),
        (b"<style>/* <meta charset=koi8-r> */</style>", "koi8-r"),
        (b"<!-- <meta charset=koi8-r> --><meta charset=big5>", "big5hkscs"),
        (b"<!--><meta charset=koi8-r>", "koi8-r"),  # `<!-->` is a whole comment
        (b"<a title='<meta charset=koi8-r>'><meta charset=big5>", "big5hkscs"),
        (b"<a <meta charset=koi8-r>", None),
        (b"<p/meta charset=koi8-r>", None),
        (b"</meta charset=koi8-r>", None),  # an end tag
        (b"<?php <meta charset=koi8-r> ?><meta charset=big5>", "big5hkscs"),  # `<?` ends at `>`
        (b"<meta/charset=koi8-r>", "koi8-r"),
        # A cut-off tag declares nothing, wherever it was cut.
        (b"<meta", None),
        (b"<meta charset=koi8-r", None),
        (b'<meta charset="koi8-r"', None),
        (b'<meta charset="koi8-r" name', None),
        (b"<meta charset=koi8-r ", None),
        (b'<meta http-equiv=content-type content="charset=koi8-r', None),
        (b"<!-- <meta charset=koi8-r>", None),
        # An XML declaration, where nothing else declares.
        (b'<?xml version="1.0" encoding="ISO-8859-2"?><p>', "iso8859-2"),
        (b'<?xml version="1.0" encoding="utf-16"?>', "utf-8"),
        (b"<?xml version='1.0' encoding = 'koi8-r' ?><meta charset=big5>", "big5hkscs"),
        ("<?xml version".encode("utf-16-le"), "utf-16-le"),
        ("<?xml version".encode("utf-16-be"), "utf-16-be"),
        (b"<p>" + b"x" * 1024 + b"<meta charset=koi8-r>", None),  # past the first 1,024 bytes
        (b"\xff<meta charset=koi8-r>", "koi8-r"),
        (b"", None),
    ],
)
def test_the_prescan(head: bytes, expected: str | None) -> None:
    assert name(head) == expected


def test_the_prescan_reads_the_first_1024_bytes_only() -> None:
    """Only the first 1,024 bytes: a body of any size after them changes nothing."""
    head = b"<!DOCTYPE html><html lang=en><head><title>t</title>" + b"<link rel=x href=y>" * 60
    assert name(head + b"<meta charset=koi8-r>") is None  # past 1,024 bytes
    assert name(b"<meta charset=koi8-r>" + head * 1000) == "koi8-r"


def encoding_of(body: bytes, content_type: str | None = None) -> str:
    return parse_html(body, content_type)[0]


def test_the_order_bom_header_prescan_guess() -> None:
    meta = b"<meta charset=koi8-r><title>\xc1</title>"
    assert encoding_of(b"\xef\xbb\xbf" + meta, "text/html; charset=big5") == "utf-8"
    assert encoding_of(b"\xff\xfe" + "x".encode("utf-16-le")) == "utf-16-le"
    assert encoding_of(b"\xfe\xff" + "x".encode("utf-16-be")) == "utf-16-be"
    assert encoding_of(meta, "text/html; charset=big5") == "big5hkscs"
    assert encoding_of(meta, "text/html; charset=bogus") == "koi8-r"  # an unknown label: on
    assert encoding_of(meta, "text/html") == "koi8-r"
    assert encoding_of(b"<title>\xc3\xa9</title>") == "utf-8"  # valid UTF-8, undeclared
    assert encoding_of(b"<title>plain</title>") == "utf-8"


def test_a_meta_past_the_prescan_changes_the_encoding() -> None:
    """The HTML Standard's "change the encoding": a `<meta>` the parser meets, declaring another
    encoding than a tentative one, makes the page read again in it."""
    comment = b"<!-- " + b"x" * 2000 + b" -->"
    body = comment + b"<meta charset=iso-8859-2><title>\xb1</title>"
    assert parse_html(body, None)[1].css_first("title").text() == "ą"  # type: ignore[union-attr]
    assert encoding_of(body) == "iso8859-2"
    # Not where a BOM or the Content-Type chose: those are certain.
    assert encoding_of(body, "text/html; charset=windows-1252") == "cp1252"
    # Not from inside <noscript>, which is text to a browser that runs scripts.
    hidden = comment + b"<noscript><meta charset=iso-8859-2></noscript><title>\xb1</title>"
    assert read_and_parse(hidden, None, lambda _: WINDOWS_1252)[0] == WINDOWS_1252
    # The first <meta> that declares decides; the prescan's, when it found one, is that one.
    body = b"<meta charset=koi8-r>" + comment + b"<meta charset=iso-8859-2>"
    assert encoding_of(body) == "koi8-r"
    # UTF-16 declared in a page read as bytes means UTF-8.
    assert encoding_of(comment + b"<meta charset=utf-16><p>\xff") == "utf-8"


def test_a_guess_is_utf_8_or_chardet_s() -> None:
    assert detect_encoding("Grüße".encode()).name == "utf-8"
    assert detect_encoding(bytes(range(256)) * 10).name == "utf-8"  # chardet has no guess
    latin = "Ça a été très intéressant, déjà à côté du théâtre où les élèves étaient réunis. "
    guess = detect_encoding((latin * 20).encode("latin-1"))
    assert guess.name in {"cp1252", "cp1251", "iso8859-15", "cp1250"}  # a label, read by the table
    assert guess.name == codecs.lookup(guess.name).name


def test_the_html5lib_default_is_what_the_html5lib_test_hands_over() -> None:
    assert read_and_parse(b"<p>x", None, lambda _: WINDOWS_1252)[0] == WINDOWS_1252
