"""An element's text as a browser shows it: checked against headless Chromium's `innerText` on
elements shaped like those of real pages (Sphinx and Debian documentation, shops, news), both
sides with whitespace collapsed to single spaces."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from selectolax.lexbor import LexborHTMLParser

from helpers import rendered_dom
from scraper.parse.shown import shown_text

CASES = {
    "inline": "<h1>Py<b>thon</b></h1>",
    "price": "<p class=price>$1<span>2.50</span></p>",
    "sphinx-heading": '<h1>Built-in Functions<a class="headerlink" href="#built-in" '
    'title="Link to this heading">¶</a></h1>',
    "sphinx-signature": '<dt class="sig sig-object py" id="abs"><span class="sig-name descname">'
    '<span class="pre">abs</span></span><span class="sig-paren">(</span><em class="sig-param">'
    '<span class="n"><span class="pre">number</span></span></em><span class="sig-paren">)'
    '</span><a class="headerlink" href="#abs">¶</a></dt>',
    "paragraphs": "<div><p>One  line\n  wrapped.</p><p>Second&nbsp;paragraph.</p></div>",
    "br": "<address>Debian Project<br>Somewhere<br/>Earth</address>",
    "list": "<ul><li>first</li><li><a href=/x>second</a> item</li><li>third<ul><li>nested"
    "</li></ul></li></ul>",
    "table": "<table><thead><tr><th>Package</th><th>Version</th></tr></thead><tbody><tr><td>"
    "nginx</td><td>1.22</td></tr><tr><td>chromium</td><td>120</td></tr></tbody></table>",
    "script-inside": "<div>before<script>var x = '<b>not text</b>';</script>after</div>",
    "style-inside": "<div><style>p { color: red }</style><p>styled</p></div>",
    "hidden": "<div>shown<span hidden>not shown</span> too</div>",
    "template": "<div>a<template><p>inert</p></template>b</div>",
    "pre": "<pre>def f(x):\n    return  x  * 2\n</pre>",
    "dl": "<dl><dt>Term</dt><dd>Its definition.</dd><dt>Other</dt><dd>More.</dd></dl>",
    "figure": '<figure><img src="a.png" alt="an image"><figcaption>The caption</figcaption>'
    "</figure>",
    "inline-blocks": "<span>a<div>b</div>c</span>",
    "button": "<div><button>Add to basket</button> <input value=typed> done</div>",
    "whitespace-between-inlines": "<p><b>bold</b> <i>italic</i><code>code</code></p>",
    "heading-nbsp": "<h2>Section&nbsp;&nbsp; 1.2 &nbsp;Title</h2>",
    "nested-divs": "<div><div><div>deep</div></div>text<div>after</div></div>",
    "comment": "<p>no<!-- a comment -->gap</p>",
    "entities": "<p>Fish &amp; chips &lt;3 &mdash; caf&eacute;</p>",
    "article": "<article><header><h2>Title</h2><time>2024-01-01</time></header><section><p>"
    "Body <a href=#>link</a>.</p></section><footer>by <em>someone</em></footer></article>",
    "noscript": "<div>with<noscript><p>no script</p></noscript>script</div>",
    "cjk": "<p>東京<b>都</b>の<br>天気</p>",
}
_WHITESPACE = re.compile("[\t\n\r\x0b\x0c \xa0]+")


def _collapsed(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip(" ")


def _page() -> str:
    cases = "".join(
        LexborHTMLParser(f"<body>{html}</body>").body.child.html.replace(  # type: ignore[union-attr]
            ">", f' data-case="{name}">', 1
        )
        for name, html in CASES.items()
    )
    script = (
        "document.getElementById('out').textContent = JSON.stringify(Object.fromEntries("
        "[...document.querySelectorAll('[data-case]')].map(e => [e.dataset.case, e.innerText])));"
    )
    return f'<!doctype html><html><body>{cases}<pre id="out"></pre><script>{script}</script>'


async def test_an_elements_text_is_what_chromium_shows(tmp_path: Path) -> None:
    page = tmp_path / "cases.html"
    await asyncio.to_thread(page.write_text, _page(), encoding="utf-8")
    dom = await rendered_dom(page, tmp_path / "chromium-profile")
    out = dom.css_first("#out")
    assert out is not None
    chromium = json.loads(out.text())
    assert sorted(chromium) == sorted(CASES)
    ours = LexborHTMLParser(await asyncio.to_thread(page.read_bytes))
    differ = {}
    for name in CASES:
        node = ours.css_first(f'[data-case="{name}"]')
        assert node is not None, name
        if shown_text(node) != _collapsed(chromium[name]):
            differ[name] = (shown_text(node), _collapsed(chromium[name]))
    assert differ == {}


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<h1>Py<b>thon</b></h1>", "Python"),
        ("<p>$1<span>2.50</span></p>", "$12.50"),
        ("<div><p>a</p><p>b</p></div>", "a b"),
        ("<p>a<br>b</p>", "a b"),
        ("<script>var a  =  1;</script>", "var a = 1;"),  # a script's own text is its content
        ("<div>" + "<div>" * 5000 + "deep" + "</div>" * 5000 + "</div>", "deep"),
    ],
)
def test_shown_text(html: str, text: str) -> None:
    tree = LexborHTMLParser(f"<body>{html}</body>")
    assert tree.body is not None and tree.body.child is not None
    assert shown_text(tree.body.child) == text
