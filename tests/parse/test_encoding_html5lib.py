"""The prescan against html5lib's encoding tests (html5lib_encoding/, README.md there): every case.

Each case is a document's bytes and the encoding a browser picks when the transport names none:
what its first 1,024 bytes declare (the prescan), or else what the first `<meta>` the parser
meets declares (seven cases declare after a comment or scripts longer than that), or else the
browser's fallback, windows-1252 in these tests. We guess instead where nothing is declared
(source.py's `detect_encoding`): the test hands `read_and_parse` windows-1252 as its guess.

Left out: html5lib-tests' `encoding/scripted/`, whose one case changes its encoding with
`document.write` from a script, which only a script engine can run (we have none).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scraper.parse.encoding import WINDOWS_1252, Encoding, from_label
from scraper.parse.source import read_and_parse

FOLDER = Path(__file__).with_name("html5lib_encoding")
FILES = ("tests1.dat", "tests2.dat", "test-yahoo-jp.dat")


def cases() -> list[tuple[str, bytes, str]]:
    """(id, data, expected label) for each case, the data as bytes (tests1.dat holds ISO-8859
    bytes on purpose). As in html5lib's own runner, a case's data keeps the newline that ends its
    last line."""
    found = []
    for name in FILES:
        raw = (FOLDER / name).read_bytes()
        for number, case in enumerate(raw.split(b"#data\n")[1:], 1):
            data, marker, rest = case.partition(b"#encoding\n")
            assert marker, (name, number)
            found.append((f"{name}:{number}", data, rest.split(b"\n", 1)[0].decode("ascii")))
    return found


CASES = cases()


def html5lib_fallback(_: bytes) -> Encoding:
    return WINDOWS_1252


def test_every_case_is_read() -> None:
    assert len(CASES) == 82
    expected = {label.lower() for _, _, label in CASES}
    assert expected == {"windows-1252", "iso-8859-2", "utf-8", "euc-jp"}


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_encoding_agrees_with_html5lib(data: bytes, expected: str) -> None:
    assert read_and_parse(data, None, html5lib_fallback)[0] == from_label(expected)
