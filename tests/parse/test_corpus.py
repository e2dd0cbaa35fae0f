"""The parser against the corpus's answers from before schema v5 (tests/corpus.py): everything but
the visible text's length and hash is identical, and the duplicates the hashes find are the same.

What "the same duplicates" means when the text's definition changed: the old key was BLAKE2b of
the text with every whitespace run collapsed; the new one is XXH3 of the text nodes stripped and
joined by one space (scraper/parse/text.py). On this corpus both keys split the pages into the
same groups. In general neither key is a function of the other: tests/parse/test_text.py shows
exactly how they relate, and where they part.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict

import pytest
import xxhash
from selectolax.lexbor import LexborHTMLParser

from corpus import RULES, Page, golden, pages
from scraper.models import ParseJob, ParseResult
from scraper.parse.page import _clean, parse_page
from scraper.parse.source import lexbor_source
from scraper.parse.text import INVISIBLE

PAGES = pages()
GOLDEN = golden()


def parse(page: Page) -> ParseResult:
    job = ParseJob(
        url=page.url, body=page.body, content_type=page.content_type, rules=RULES, text="store"
    )
    return parse_page(job)


def old_visible_text(page: Page) -> str:
    """The visible text as it was defined until schema v5 (what the golden hashes are of)."""
    tree = LexborHTMLParser(lexbor_source(page.body, page.content_type)[1])
    tree.strip_tags(INVISIBLE)
    body = tree.body
    return _clean(body.text(separator=" ", skip_empty=True)) if body is not None else ""


def test_the_corpus_is_the_golden_one() -> None:
    assert sorted(page.name for page in PAGES) == sorted(GOLDEN)
    assert len({page.url for page in PAGES}) == len(PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_titles_links_and_fields_are_as_before(page: Page) -> None:
    result = parse(page)
    before = GOLDEN[page.name]
    now = {
        "encoding": result.encoding,
        "title": result.title,
        "description": result.description,
        "canonical": result.canonical,
        "links": list(result.links),
        "follow": list(result.follow),
        "fields": result.fields,
    }
    assert now == {key: before[key] for key in now}


def test_the_old_definition_is_what_the_golden_hashes_are_of() -> None:
    """So that test_text.py's reference for the old text is the old text."""
    for page in PAGES:
        text = old_visible_text(page)
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
        assert (digest.hexdigest(), len(text)) == (
            GOLDEN[page.name]["text_hash"],
            GOLDEN[page.name]["text_length"],
        ), page.name


def test_hash_and_length_are_of_the_text() -> None:
    for page in PAGES:
        result = parse(page)
        assert result.text is not None
        assert result.text_length == len(result.text)
        assert result.text_hash == xxhash.xxh3_128_hexdigest(result.text.encode()), page.name


def test_duplicates_found_before_and_after_agree() -> None:
    """The pages grouped by the old hash and by the new are the same groups; and within the new,
    equal text ⇔ equal hash (no collision on the corpus)."""
    by_old: defaultdict[object, set[str]] = defaultdict(set)
    by_new: defaultdict[object, set[str]] = defaultdict(set)
    by_text: defaultdict[object, set[str]] = defaultdict(set)
    for page in PAGES:
        result = parse(page)
        by_old[GOLDEN[page.name]["text_hash"]].add(page.name)
        by_new[result.text_hash].add(page.name)
        by_text[result.text].add(page.name)
    groups_old = sorted(sorted(group) for group in by_old.values())
    groups_new = sorted(sorted(group) for group in by_new.values())
    assert groups_new == groups_old
    assert sorted(sorted(group) for group in by_text.values()) == groups_new
    duplicates = [group for group in groups_new if len(group) > 1]
    assert ["dup-article-1", "dup-article-2", "dup-article-3"] in duplicates
    assert ["dup-greeting-latin-1", "dup-greeting-utf-8"] in duplicates
    assert ["demo/page/3", "dup-demo-copy"] in duplicates
    assert not any("near-article" in group for group in duplicates)
