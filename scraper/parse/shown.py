"""An element's text as a browser shows it (its `innerText`), whitespace collapsed.

Text nodes join with nothing between them (`Py<b>thon</b>` is "Python"), as inline elements add
nothing; block elements, table cells and `<br>` separate what they hold by whitespace; what a
browser does not render (scripts, styles, templates, `hidden` elements, the contents of form
controls and embedded media) is not text. Then every run of whitespace, the no-break space
included, becomes one space, which is how `[extract]` values are stored. The defaults are the HTML
standard's rendering section (its user-agent style sheet); a page's own CSS is not applied, as a
crawler reads no style sheets.

The visible text of a whole page (`text.py`) keeps its cheaper definition, text nodes joined by a
space: it is hashed to find duplicates, where only consistency matters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from selectolax.lexbor import LexborNode

# display: none in the user-agent style sheet (and what a crawler never runs: noscript's content is
# what a browser with scripts off would show, so a browser with scripts on shows none of it).
NOT_RENDERED = frozenset({
    "area", "base", "basefont", "datalist", "head", "link", "meta", "noembed", "noframes",
    "noscript", "param", "rp", "script", "style", "template", "title"
})  # fmt: skip
# Replaced elements and form controls: what they contain is not shown as text.
OPAQUE = frozenset({
    "audio", "canvas", "embed", "iframe", "img", "input", "object", "select", "textarea",
    "video"
})  # fmt: skip
BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "html", "legend", "li",
    "listing", "main", "menu", "nav", "ol", "optgroup", "option", "p", "plaintext", "pre",
    "search", "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul", "xmp"
})  # fmt: skip
CELLS = frozenset(("td", "th"))
_SKIPPED = NOT_RENDERED | OPAQUE | {"-comment"}
# Any element that makes the text differ from the text nodes simply joined.
_SPECIAL = ",".join(sorted(NOT_RENDERED | OPAQUE | BLOCKS | CELLS | {"br", "[hidden]"}))
# ASCII whitespace and the no-break space, as `page._clean` has it for titles; the rarer Unicode
# spaces are kept as they are.
_WHITESPACE = re.compile("[\t\n\r\x0b\x0c \xa0]+")


def shown_text(node: LexborNode) -> str:
    """`node`'s text as a browser shows it, whitespace collapsed to single spaces and trimmed; for
    an element a browser does not render (a `<script>`, say), its content."""
    if node.tag in NOT_RENDERED:
        return _collapse(node.text(deep=True, separator=""))
    if not _has_special_descendant(node):  # most fields: text nodes and inline elements
        return _collapse(node.text(deep=True, separator=""))
    return _collapse("".join(_walk(node)))


def _has_special_descendant(node: LexborNode) -> bool:
    # css_first matches the node itself too: ask each child instead (in C, not a Python walk).
    return any(
        child.tag not in ("-text", "-comment") and child.css_first(_SPECIAL) is not None
        for child in node.iter(include_text=False)
    )


def _walk(root: LexborNode) -> Iterator[str]:
    """The text nodes and separators under `root`, in document order. An explicit stack, not
    recursion: a hostile page nests elements deeper than Python's recursion limit."""
    stack: list[tuple[Iterator[LexborNode], str]] = [(root.iter(include_text=True), "")]
    while stack:
        children, closing = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            yield closing
            continue
        tag = child.tag
        if tag == "-text":
            yield child.text_content or ""
        elif tag == "br":
            yield "\n"
        elif tag in _SKIPPED or "hidden" in child.attributes:
            continue
        else:
            separator = "\n" if tag in BLOCKS else "\t" if tag in CELLS else ""
            yield separator
            stack.append((child.iter(include_text=True), separator))


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip(" ")
