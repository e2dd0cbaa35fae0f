"""The visible text's definition since schema v5 (scraper/parse/text.py), fuzzed against the one
before it on random markup, whitespace and Unicode.

The two definitions, for the text nodes t₁…tₙ under <body> (invisible elements removed, nodes of
HTML whitespace only left out):

- old: collapse(t₁ + " " + … + " " + tₙ), where collapse turns every run of W = ASCII whitespace
  (space, \\t, \\n, \\r, \\v, \\f) and U+00A0 into one space and trims the ends;
- new: strip(t₁) + " " + … + " " + strip(tₙ), where strip is `str.strip()` (any Unicode space).

What "agree" means, exactly (each checked below):

1. collapse(new) == old, whenever strip removes only characters of W from each node. That is,
   on text whose nodes neither start nor end with some other Unicode space (U+2003, U+3000,
   U+0085, U+001C…), the new text is the old text with the whitespace inside nodes left as it was.
2. Hence new(a) == new(b) ⇒ old(a) == old(b) under the same condition: the new hash never calls
   two pages duplicates that the old one told apart.
3. The converse does not hold, by design: pages that differ only in the whitespace inside a text
   node ("a  b" and "a b", or a line broken elsewhere in a <pre>) had the same old text and
   have different new texts. And a page whose node ends in, say, U+2003 now equals the page
   without it, which the old text told apart.
4. Equal text ⇔ equal hash: the hash is XXH3-128 of the UTF-8 bytes (no collision here, nor on
   the corpus; 128 bits make one unlikely in any crawl).
"""

from __future__ import annotations

import random
import re

import xxhash
from selectolax.lexbor import LexborHTMLParser

from scraper.parse.page import _clean
from scraper.parse.text import INVISIBLE, text_hash, visible_text

W = " \t\n\r\x0b\x0c\xa0"
HTML_SPACE = " \t\n\r\x0c"  # what skip_empty leaves out
OTHER_SPACES = ["\u2003", "\u3000", "\x85", "\x1c", "\u2028", "\u202f"]
WORDS = ["a", "b", "é", "東京", "😀", "x" * 3, "&amp;", "&nbsp;", "\ufffd"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\xa0", "&nbsp;", *OTHER_SPACES]
TAGS = ["<b>", "</b>", "<p>", "</p>", "<br>", "<div class='x'>", "</div>", "<pre>", "</pre>"]
TAGS += ["<script>var s = 'a  b';</script>", "<style>p { }</style>", "<!-- c -->"]
TAGS += ["<template>tpl</template>", "<noscript>ns</noscript>", "<span> </span>", "<td>", "<li>"]


def random_body(rng: random.Random, pools: list[list[str]]) -> str:
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randrange(0, 25)))


def nodes_and_texts(html: str) -> tuple[list[str], str, str]:
    """(the text nodes the definitions start from, the old text, the new text)."""
    tree = LexborHTMLParser(f"<html><body>{html}</body></html>")
    tree.strip_tags(INVISIBLE)
    body = tree.body
    assert body is not None
    nodes = [
        node.text_content or ""
        for node in body.traverse(include_text=True)
        if node.tag == "-text" and (node.text_content or "").strip(HTML_SPACE)
    ]
    old = _clean(body.text(separator=" ", skip_empty=True))
    return nodes, old, visible_text(tree)


def only_w_stripped(nodes: list[str]) -> bool:
    return all(
        set(node[: len(node) - len(node.lstrip())]) <= set(W)
        and set(node[len(node.rstrip()) :]) <= set(W)
        for node in nodes
    )


def test_the_definitions_are_what_the_docstrings_say() -> None:
    rng = random.Random(150)
    for _ in range(3000):
        html = random_body(rng, [WORDS, SPACES, TAGS])
        nodes, old, new = nodes_and_texts(html)
        assert new == " ".join(node.strip() for node in nodes), repr(html)
        assert old == _clean(" ".join(nodes)), repr(html)


def test_new_text_collapsed_is_the_old_text() -> None:
    """(1): whenever stripping removes only W. Without that condition it can fail: the old text
    keeps the other spaces at node edges that the new one strips."""
    rng = random.Random(151)
    checked = outside = differ = 0
    for _ in range(5000):
        html = random_body(rng, [WORDS, SPACES, TAGS])
        nodes, old, new = nodes_and_texts(html)
        if only_w_stripped(nodes):
            assert _clean(new) == old, repr(html)
            checked += 1
        else:
            outside += 1
            differ += _clean(new) != old
    assert checked > 1000 and outside > 1000 and differ > 100


def test_equal_new_texts_mean_equal_old_texts() -> None:
    """(2) on many small random pages, drawn from a few words so that equal texts are common; and
    (4): equal text ⇔ equal hash."""
    rng = random.Random(152)
    few_words = ["a", "é", "東"]
    ws = [s for s in SPACES if s not in OTHER_SPACES]  # the condition of (1)
    old_of: dict[str, str] = {}
    hash_of: dict[str, str] = {}
    texts_of: dict[str, str] = {}
    merged = 0
    for _ in range(6000):
        html = random_body(rng, [few_words, ws, TAGS[:8]])
        _, old, new = nodes_and_texts(html)
        if new in old_of:
            assert old_of[new] == old, repr(html)
            merged += 1
        old_of[new] = old
        digest = text_hash(new)
        assert texts_of.setdefault(digest, new) == new  # equal hash ⇒ equal text
        assert hash_of.setdefault(new, digest) == digest  # equal text ⇒ equal hash
    assert merged > 1000


def test_where_the_definitions_part() -> None:
    """(3): whitespace inside a node now counts; other Unicode spaces at a node's edge do not."""
    inside_a = nodes_and_texts("<p>fish  and\n chips</p>")
    inside_b = nodes_and_texts("<p>fish and chips</p>")
    assert inside_a[1] == inside_b[1] == "fish and chips"  # old: the same
    assert inside_a[2] != inside_b[2]  # new: not
    edge_a = nodes_and_texts("<p>tea\u2003</p><p>time</p>")
    edge_b = nodes_and_texts("<p>tea</p><p>time</p>")
    assert edge_a[1] != edge_b[1]  # old: "tea\u2003 time" and "tea time"
    assert edge_a[2] == edge_b[2] == "tea time"  # new: the same


def test_hash_is_xxh3_128_of_the_utf8_whatever_the_slices() -> None:
    """text_hash encodes long non-ASCII texts slice by slice (16 K characters); the digest is
    the one of the whole text's UTF-8, wherever a slice ends."""
    rng = random.Random(153)
    alphabet = ["a", " ", "é", "—", "東", "😀", "\ud800", "\udfff", "\n"]
    for size in [0, 1, 16_383, 16_384, 16_385, 32_768, 50_000]:
        for _ in range(3):
            text = "".join(rng.choice(alphabet) for _ in range(size))
            expected = xxhash.xxh3_128_hexdigest(text.encode("utf-8", "surrogatepass"))
            assert text_hash(text) == expected
    ascii_text = "plain " * 10_000
    assert text_hash(ascii_text) == xxhash.xxh3_128_hexdigest(ascii_text.encode())
    assert re.fullmatch("[0-9a-f]{32}", text_hash("x"))
