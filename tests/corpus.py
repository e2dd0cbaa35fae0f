"""The parser's test corpus: pages whose parse must not change when the parser's insides do.

`corpus_golden.json` (beside this file) holds what the parser answered for each page before the
visible text's definition changed (schema v5): tests/parse/test_corpus.py checks today's answers
against it. Regenerate it only on purpose, with the parser whose answers are to be kept:

    python tests/corpus.py > tests/corpus_golden.json

Changed on purpose since, by hand, only where the change named: encodings by the Encoding
Standard (parse/encoding.py) renamed four pages' encodings and so re-read one page's text, whose
old-definition hash and length were recomputed as test_corpus.py computes them: "gb2312"
gb18030 → gbk (the standard's GBK; the same text), "ascii-as-utf-16" utf-16-be → utf-16-le (the
label utf-16 is UTF-16LE), "binary" utf8 → utf-8 (the default's name spelled as Python's codec),
"latin-1-undeclared" Windows-1251 → cp1251 (chardet's guess, now read through the label table).

The pages: a piece of the demo site (its home page, 40 pages, a list page, and two pages of
~200 KB), pages in many encodings, awkward markup and whitespace, and pages that are copies of one
another under other markup, so the duplicates found can be compared.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from scraper.demosite import SiteSpec, render
from scraper.models import Extraction, ExtractRule, RuleSet

GOLDEN = Path(__file__).with_name("corpus_golden.json")
ORIGIN = "http://corpus.example"

RULES = Extraction(
    every=(
        ExtractRule(name="heading", css="h1"),
        ExtractRule(name="price", css="p.price", regex=r"([0-9.]+)"),
        ExtractRule(name="images", css="img", take="attr", attr="src", all=True),
    ),
    sets=(
        RuleSet(
            urls=("*/crafted/*",),
            rules=(
                ExtractRule(name="box", css="div.box", take="html"),
                ExtractRule(name="tags", css="li.tag", all=True, regex=r"#\w+"),
                ExtractRule(name="cell", css="td"),
            ),
        ),
    ),
)


@dataclass(frozen=True)
class Page:
    name: str
    url: str
    body: bytes
    content_type: str | None


def _html(title: str, body: str, head: str = "") -> str:
    return (
        f"<!DOCTYPE html><html><head><title>{title}</title>{head}</head><body>{body}</body></html>"
    )


_ARTICLE = (
    "<h1>Fish &amp; chips</h1><p>Served with <b>peas</b>, hot.</p>"
    "<p>Café crème — 東京 😀 naïve</p>"
    "<ul><li class='tag'>#fried</li><li class='tag'>plain</li></ul>"
)

# name → (body, content type), before the URL is added. Each group of "dup-*" pages shares its
# visible text under both definitions; "near-*" pages differ from one by a word.
_CRAFTED: dict[str, tuple[bytes, str | None]] = {
    "links": (
        _html(
            "  Hello\n  World ",
            "<a href='a.html'>a</a> <a href='/b#frag'>b</a> <a href='a.html'>again</a>"
            "<a href='mailto:x@example.com'>m</a> <a href='javascript:void(0)'>j</a>"
            "<a href='https://Other.example:443/x'>o</a> <area href='../c' />"
            "<a href='./d?'>d</a><a href='%7Euser/'>u</a><a href='http://[::1]@'>odd</a>"
            "<a href=' /spaced '>s</a><a href='//cdn.example/lib'>cdn</a>",
            "<meta name='Description' content=' About it '><link rel='canonical' href='/canon'>",
        ).encode(),
        "text/html",
    ),
    "base-href": (
        _html("Base", "<a href='x'>x</a><a href='../y'>y</a>", "<base href='/sub/dir/'>").encode(),
        "text/html",
    ),
    "entities": (
        _html("Fish &amp; Chips &eacute;t&#233; &lt;3", "<p>a&nbsp;b &amp; c</p>").encode(),
        "text/html",
    ),
    "latin-1-header": (
        _html("Caf\xe9 cr\xe8me", "<p>d\xe9j\xe0 vu</p>").encode("latin-1"),
        "text/html; charset=ISO-8859-1",
    ),
    "cp1251-meta": (
        _html("Привет", "<p>мир</p>", '<meta charset="windows-1251">').encode("cp1251"),
        "text/html",
    ),
    "utf-16-bom": (
        b"\xff\xfe" + _html("naïve", "<p>utf sixteen</p>").encode("utf-16-le"),
        "text/html; charset=iso-8859-1",
    ),
    "utf-8-bom": (b"\xef\xbb\xbf" + _html("BOM é", "<p>with a BOM</p>").encode(), "text/html"),
    "latin-1-undeclared": (
        _html(
            "Les élèves à côté",
            "<p>" + "Ça a été très intéressant, déjà à côté du théâtre. " * 20 + "</p>",
        ).encode("latin-1"),
        None,
    ),
    "shift-jis": (
        _html("日本語", "<p>こんにちは 世界</p>", '<meta charset="shift_jis">').encode("sjis"),
        None,
    ),
    "gb2312": (
        _html("中文", "<p>你好 世界</p>", '<meta charset="gb2312">').encode("gb18030"),
        "text/html",
    ),
    "cp500-meta": (_html("ebcdic", "<p>x</p>", '<meta charset="cp500">').encode("cp500"), None),
    "ascii-windows-1252": (
        _html("Ascii only", "<p>plain</p>").encode(),
        "text/html; charset=cp1252",
    ),
    "ascii-as-utf-16": (b"<title>plain</title><p>x</p>", "text/html; charset=utf-16"),
    "invalid-utf-8": (
        _html("Bad \xff bytes", "<p>bad \xfe\x00\x80 byte \xc3\x00</p>").encode("latin-1"),
        "text/html; charset=utf-8",
    ),
    "cut-utf-8": (_html("Cut", "<p>東京</p>").encode()[:-3] + b"\xe2\x82", None),
    "replacement-char": (_html("Real \ufffd", "<p>a \ufffd b</p>").encode(), "text/html"),
    "binary": (bytes(range(256)) * 10, "text/html"),
    "empty": (b"", "text/html"),
    "no-body-text": (_html("Only a title", "<script>var x = 1;</script>   \n  ").encode(), None),
    "frameset": (
        b"<html><head><title>F</title></head><frameset><frame src='a'></frameset></html>",
        "text/html",
    ),
    "invisible": (
        _html(
            "Invisible",
            "<style>.x{}</style><script>var secret=1</script><p>Seen   text</p>"
            "<noscript>n</noscript><template><p>tpl</p></template>",
            "<noscript><meta name='description' content='in noscript'></noscript>",
        ).encode(),
        "text/html",
    ),
    "broken-markup": (
        b"<html><title>T</title><p><a href='x'>one<a href=y>two</div></span><<<>>",
        "text/html",
    ),
    "whitespace-kinds": (
        _html(
            "Tabs\tand\nlines",
            "<p>\n\t  a\t\tb \r\n c\x0b\x0cd  </p><p>&nbsp;</p><p>e&nbsp;&nbsp;f</p>"
            "<p>g\u2003h</p><pre>\n  indented\n    code\n</pre><td>\u3000cell\u3000</td>",
        ).encode(),
        "text/html",
    ),
    "fields": (
        _html(
            "Fields",
            '<h1>Widget</h1><p class="price">Price: 12.50 incl. VAT</p><img src="a.png">'
            '<img src="b.png"><img><div class="box"><b>bold</b></div>'
            "<ul><li class='tag'>#red</li><li class='tag'>#big</li><li class='tag'>x</li></ul>"
            "<table><tr><td> 1 </td><td>2</td></tr></table>",
        ).encode(),
        "text/html; charset=utf-8",
    ),
    # The same article three times: other tags and attributes, other whitespace between tags,
    # another title and head (the title is not part of the visible text).
    "dup-article-1": (_html("Article", _ARTICLE).encode(), "text/html"),
    "dup-article-2": (
        _html(
            "Article, again",
            _ARTICLE.replace("<p>", "<div class='x'>").replace("</p>", "</div>"),
            "<meta name='description' content='copy'>",
        ).encode(),
        "text/html; charset=utf-8",
    ),
    "dup-article-3": (
        _html(
            "Article", "\n  " + _ARTICLE.replace("</p>", "</p>\n    ").replace("<ul>", "<ul>\n  ")
        ).encode(),
        None,
    ),
    "near-article": (_html("Article", _ARTICLE.replace("hot", "cold")).encode(), "text/html"),
    # The same short page in two encodings: the same text.
    "dup-greeting-utf-8": (_html("Hi", "<p>Grüße aus Köln</p>").encode(), "text/html"),
    "dup-greeting-latin-1": (
        _html("Hi", "<p>Grüße aus Köln</p>").encode("latin-1"),
        "text/html; charset=iso-8859-1",
    ),
    # Pages with no visible text at all are all "the same" text (length 0; the duplicates view
    # leaves them out).
    "dup-empty-1": (_html("Nothing", "").encode(), "text/html"),
    "dup-empty-2": (_html("Nothing either", "<div>  </div>").encode(), "text/html"),
}


def pages() -> list[Page]:
    """Every page of the corpus, in a fixed order."""
    spec = SiteSpec(pages=40)
    found: list[Page] = []
    for path in ["/", *(f"/page/{i}" for i in range(40)), "/list?page=0"]:
        html = render(spec, path)
        assert html is not None
        found.append(Page(f"demo{path}", ORIGIN + path, html.encode(), "text/html"))
    # A demo page served again under another URL: a duplicate under any definition.
    found.append(Page("dup-demo-copy", ORIGIN + "/copy/page/3", found[4].body, "text/html"))
    big = SiteSpec(pages=2, page_bytes=200_000, extras=False)
    for i in range(2):
        html = render(big, f"/page/{i}")
        assert html is not None
        found.append(Page(f"big/page/{i}", f"{ORIGIN}/big/page/{i}", html.encode(), None))
    for name, (body, content_type) in _CRAFTED.items():
        found.append(Page(name, f"{ORIGIN}/crafted/{name}.html", body, content_type))
    return found


def golden() -> dict[str, dict[str, object]]:
    return json.loads(GOLDEN.read_text())  # type: ignore[no-any-return]


def _answers() -> dict[str, dict[str, object]]:
    """What the parser at hand answers for each page (run with the old parser to regenerate)."""
    from scraper.models import ParseJob
    from scraper.parse.page import parse_page

    answers: dict[str, dict[str, object]] = {}
    for page in pages():
        job = ParseJob(url=page.url, body=page.body, content_type=page.content_type, rules=RULES)
        result = parse_page(job)
        answers[page.name] = {
            "encoding": result.encoding,
            "title": result.title,
            "description": result.description,
            "canonical": result.canonical,
            "links": list(result.links),
            "follow": list(result.follow),
            "fields": result.fields,
            "text_length": result.text_length,
            "text_hash": result.text_hash,
        }
    return answers


if __name__ == "__main__":
    json.dump(_answers(), sys.stdout, indent=1, ensure_ascii=False, sort_keys=True)
    sys.stdout.write("\n")
