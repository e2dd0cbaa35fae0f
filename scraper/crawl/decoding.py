"""A body's Content-Encoding undone by us, not by aiohttp, within a limit on what it decodes to.

The session asks aiohttp not to decompress (`auto_decompress=False`), so the archive
(storage.warc) keeps each body exactly as it came; the parser gets it decoded here, as aiohttp
would have decoded it: gzip, deflate (with or without its zlib header), br and zstd through
aiohttp's own decompressors, any other coding passed on as it came. Decoding stops once it has
produced more than the limit (fetch.max_bytes), so a small body that decodes to gigabytes (a
"gzip bomb") costs no more than the limit, as it did when aiohttp decoded.
"""

from __future__ import annotations

from aiohttp.compression_utils import (
    HAS_BROTLI,
    HAS_ZSTD,
    BrotliDecompressor,
    ZLibDecompressor,
    ZSTDDecompressor,
)

ZLIB_CODINGS = frozenset({"gzip", "deflate"})  # as aiohttp: not x-gzip


class DecodingError(ValueError):
    """A body that does not decode as its Content-Encoding says."""


class BodyDecoder:
    """Decodes one body, a chunk at a time, into at most `limit` + 1 bytes (one more than the
    limit: how the caller knows it was passed)."""

    def __init__(self, coding: str | None, limit: int) -> None:
        self._coding = (coding or "").strip().lower()
        self._limit = limit
        self._decompressor: ZLibDecompressor | BrotliDecompressor | ZSTDDecompressor | None = None
        self.raw = bytearray()  # as received
        # Decoded, when there is a coding to undo; else the very same bytes as `raw`.
        self.decoded = self.raw if self.passes else bytearray()

    @property
    def passes(self) -> bool:
        """True when the body is kept as it came (no coding, or one we do not decode)."""
        coding = self._coding
        return not (
            coding in ZLIB_CODINGS
            or (coding == "br" and HAS_BROTLI)
            or (coding == "zstd" and HAS_ZSTD)
        )

    @property
    def over(self) -> bool:
        return len(self.decoded) > self._limit

    def feed(self, chunk: bytes) -> None:
        """A chunk as received; raises DecodingError if it does not decode."""
        self.raw += chunk
        if self.decoded is self.raw:
            return
        room = self._limit + 1 - len(self.decoded)
        if room <= 0 or not chunk:
            return
        try:
            self.decoded += self._decoder(chunk).decompress_sync(chunk, room)
        except Exception as exc:  # zlib.error, brotli.error, zstd's: each library its own
            raise DecodingError(f"the body does not decode as {self._coding}: {exc}") from exc

    def finish(self) -> None:
        """The body ended: what the decompressor still holds (a deflate stream's tail)."""
        if isinstance(self._decompressor, ZLibDecompressor) and not self.over:
            try:
                self.decoded += self._decompressor.flush()
            except Exception as exc:
                raise DecodingError(f"the body does not decode as {self._coding}: {exc}") from exc
            del self.decoded[self._limit + 1 :]

    def _decoder(self, first: bytes) -> ZLibDecompressor | BrotliDecompressor | ZSTDDecompressor:
        if self._decompressor is None:
            coding = self._coding
            if coding == "br":
                self._decompressor = BrotliDecompressor(max_sync_chunk_size=None)
            elif coding == "zstd":
                self._decompressor = ZSTDDecompressor(max_sync_chunk_size=None)
            else:
                # As aiohttp does: "deflate" is meant to have zlib's header, and servers often
                # send it raw; the first byte tells.
                raw_deflate = coding == "deflate" and first[0] & 0xF != 8
                self._decompressor = ZLibDecompressor(
                    encoding="gzip" if coding != "deflate" else "deflate",
                    suppress_deflate_header=raw_deflate,
                    max_sync_chunk_size=None,
                )
        return self._decompressor
