"""Our own decoding of Content-Encoding: what aiohttp decoded, within the same limit."""

from __future__ import annotations

import gzip
import zlib

import brotli
import pytest

from scraper.crawl.decoding import BodyDecoder, DecodingError

PAGE = b"<html><title>t</title>" + b"words " * 5000


def decode(coding: str | None, data: bytes, limit: int = 1_000_000, chunk: int = 4096) -> bytes:
    decoder = BodyDecoder(coding, limit)
    for start in range(0, len(data), chunk):
        decoder.feed(data[start : start + chunk])
        if decoder.over:
            break
    else:
        decoder.finish()
    assert decoder.raw == data[: len(decoder.raw)]  # the bytes as they came, kept
    return bytes(decoder.decoded)


@pytest.mark.parametrize(
    ("coding", "encoded"),
    [
        ("gzip", gzip.compress(PAGE)),
        ("GZip", gzip.compress(PAGE)),
        ("deflate", zlib.compress(PAGE)),
        ("deflate", zlib.compress(PAGE, wbits=-15)[0:]),  # raw deflate, as servers often send
        ("br", brotli.compress(PAGE)),
    ],
)
def test_each_coding_decodes_to_the_page(coding: str, encoded: bytes) -> None:
    assert decode(coding, encoded) == PAGE


def test_no_coding_or_an_unknown_one_passes_the_body_as_it_came() -> None:
    assert decode(None, PAGE) == PAGE
    assert decode("identity", PAGE) == PAGE
    assert decode("x-gzip", b"as sent") == b"as sent"  # aiohttp left it alone too


def test_a_gzip_bomb_decodes_no_further_than_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 200_000_000, compresslevel=9)  # ~200 KB on the wire
    decoder = BodyDecoder("gzip", 1_000_000)
    for start in range(0, len(bomb), 65536):
        decoder.feed(bomb[start : start + 65536])
        if decoder.over:
            break
    assert decoder.over and len(decoder.decoded) == 1_000_001
    assert len(decoder.raw) < 200_000  # it stopped reading long before the end


def test_a_body_that_does_not_decode_is_an_error() -> None:
    with pytest.raises(DecodingError, match="does not decode as gzip"):
        decode("gzip", b"this is not gzip at all")
