"""What a callback is given: a `Page` (the response, parsed once) and its `Node`s.

Built in the parse worker on the tree the parser already made for the page (the `[extract]`
rules and the links read the same one), before the parser strips what a browser does not show, so
a callback still finds `<script>` and `<template>` elements.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from selectolax.lexbor import LexborHTMLParser, LexborNode

from scraper.parse.shown import shown_text
from scraper.spider.api import Request

# Elements whose content is code or data, not text: `.text()` gives that content as it is.
_RAW_TEXT = frozenset({"script", "style", "template", "textarea", "title", "xmp", "noscript"})


class Node:
    """An element of the page: `.text()`, `.attr(name)`, `.html`, `.css(...)`, `.css_first(...)`."""

    __slots__ = ("_node",)

    def __init__(self, node: LexborNode) -> None:
        self._node = node

    def text(self) -> str:
        """What a browser shows of the element (its innerText, whitespace collapsed, as
        `[extract]` takes it); for a `<script>` or `<style>` element, its content as it is."""
        node = self._node
        if node.tag in _RAW_TEXT:
            return node.text(deep=True)
        return shown_text(node) or ""

    def attr(self, name: str) -> str | None:
        """The attribute's value, or None when the element has none of that name."""
        return self._node.attributes.get(name)

    @property
    def tag(self) -> str:
        return self._node.tag or ""

    @property
    def html(self) -> str:
        """The element's markup, itself included."""
        return self._node.html or ""

    def css(self, selector: str) -> list[Node]:
        """The elements under this one that match the CSS selector, in document order."""
        return [Node(node) for node in self._node.css(selector)]

    def css_first(self, selector: str) -> Node | None:
        """The first element under this one that matches, or None."""
        node = self._node.css_first(selector)
        return Node(node) if node is not None else None

    def __repr__(self) -> str:
        return f"<Node {self.tag}>"


class Headers(Mapping[str, str]):
    """A response's headers by name, case-insensitive as HTTP's are (`headers["content-type"]`);
    a name sent twice gives its values joined by ", " (Set-Cookie's: by newlines)."""

    __slots__ = ("_values",)

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        values: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            joiner = "\n" if key == "set-cookie" else ", "
            values[key] = f"{values[key]}{joiner}{value}" if key in values else value
        self._values = values

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"


class Page:
    """The response a callback is called with. `url` is the page's (a redirect's target once
    followed); `base` what its relative links resolve against (its `<base href>`, or `url`)."""

    __slots__ = ("_encoding", "_json", "_text", "_tree", "base", "body", "depth", "headers",
                 "meta", "status", "url")  # fmt: skip

    def __init__(
        self,
        *,
        url: str,
        base: str,
        status: int,
        headers: tuple[tuple[str, str], ...],
        meta: dict[str, Any],
        depth: int,
        body: bytes,
        encoding: str,
        tree: LexborHTMLParser,
    ) -> None:
        self.url = url
        self.status = status
        # Case-insensitive, as HTTP's names are: page.headers["content-type"].
        self.headers: Mapping[str, str] = Headers(headers)
        self.meta = meta
        self.depth = depth
        self.body = body
        self.base = base
        self._encoding = encoding
        self._text: str | None = None
        self._tree = tree
        self._json: Any = _UNREAD

    @property
    def text_body(self) -> str:
        """The body decoded, in the encoding the parser found for it."""
        if self._text is None:
            try:
                self._text = self.body.decode(self._encoding, "replace")
            except LookupError:  # a name the parser knows and Python does not
                self._text = self.body.decode("utf-8", "replace")
        return self._text

    def json(self) -> Any:
        """The body as JSON (an API's response); raises ValueError when it is not JSON."""
        if self._json is _UNREAD:
            self._json = json.loads(self.body)
        return self._json

    def css(self, selector: str) -> list[Node]:
        """The page's elements that match the CSS selector, in document order."""
        return [Node(node) for node in self._tree.css(selector)]

    def css_first(self, selector: str) -> Node | None:
        """The page's first element that matches, or None."""
        node = self._tree.css_first(selector)
        return Node(node) if node is not None else None

    def follow(
        self,
        href: str | Node,
        callback: str = "parse",
        meta: Mapping[str, Any] | None = None,
        **request: Any,
    ) -> Request:
        """A Request for `href` (a URL, relative to the page, or an element with an `href`),
        for `callback` with `meta`; further keywords go to `Request` (method, headers, body,
        dont_filter)."""
        if isinstance(href, Node):
            href = href.attr("href") or ""
        # Left relative: the worker resolves a callback's requests as it does a page's links,
        # remembered per site (urljoin here was 60% of a link-following callback's time).
        return Request(href, callback=callback, meta=meta, **request)

    def __repr__(self) -> str:
        return f"<Page {self.status} {self.url}>"


_UNREAD = object()
