"""A page's visible text, its length and its hash: what `pages.text`, `text_length` and
`text_hash` hold, and what the `duplicates` view and preset compare.

The definition, chosen so that Lexbor's own traversal computes it, with no pass over the text in
Python (schema v5 on; docs/guides/database.md says the same):

- the visible text is the text nodes under `<body>`, in document order, once `<script>`,
  `<style>`, `<noscript>` and `<template>` are removed; each node stripped of whitespace at both
  ends (Python's `str.strip()`: any Unicode whitespace), nodes made only of HTML's ASCII
  whitespace left out, the rest joined by one space. Whitespace inside a node is kept as it is.
- its length is in characters (code points), `len()` of that text;
- its hash is XXH3-128 (xxhash) of the text's UTF-8 bytes, as 32 lowercase hex digits: in Python,
  `xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass"))`.

Before v5 the text was collapsed (every run of ASCII whitespace and no-break spaces, within and
between nodes, became one space) and hashed with BLAKE2b-128; the migration marks those hashes
`blake2b:` so that no old hash can equal a new one by accident. On a 1.5 MB page the old way took
~13 ms of a 14 ms parse: the text built with separators (1.6 ms), the regex collapse (5.8 ms),
BLAKE2b (1.5 ms) and the decodes around them; this one ~1 ms (strip-and-join in selectolax's C,
0.5 ms; UTF-8 encoding and XXH3, 0.4 ms).
"""

from __future__ import annotations

from selectolax.lexbor import LexborHTMLParser
from xxhash import xxh3_128, xxh3_128_hexdigest

INVISIBLE = ["script", "style", "noscript", "template"]
# A text with any character past U+007F is stored by CPython as 2 or 4 bytes per character, and
# encoding 1.5 MB of it to UTF-8 at once costs ~1.2 ms. Slices of it are narrowed back to one
# byte per character when they hold only ASCII, so encoding and hashing slice by slice (XXH3's
# streaming state gives the one-shot digest) costs ~0.35 ms for the whole: most slices of a page
# are ASCII. 16 K characters measured best (4 K: 0.41 ms, 64 K: 0.43 ms).
_SLICE = 16_384


def visible_text(tree: LexborHTMLParser) -> str:
    """The page's visible text (see the module's docstring), from a tree whose INVISIBLE
    elements were removed (`tree.strip_tags(INVISIBLE)`)."""
    body = tree.body
    if body is None:
        return ""
    return body.text(separator=" ", strip=True, skip_empty=True)


def text_hash(text: str) -> str:
    """XXH3-128 of the text's UTF-8 bytes, as 32 hex digits."""
    if text.isascii():  # O(1) in CPython: the text is already its own UTF-8
        return xxh3_128_hexdigest(text.encode())
    state = xxh3_128()
    for start in range(0, len(text), _SLICE):
        state.update(text[start : start + _SLICE].encode("utf-8", "surrogatepass"))
    return state.hexdigest()
