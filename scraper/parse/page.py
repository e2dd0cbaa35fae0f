"""The parse stage: HTML bytes → ParseResult, in worker processes.

`parse_page` is a top-level function of picklable values: it runs in a worker process, so it
knows nothing of asyncio, sessions or the database, and this module imports none of them (a
worker starts sooner). Its answer depends on its job alone; the one state it keeps is a memo of
resolved links (`urls.resolve_links`), which changes how fast it answers, never what.
`ParsePool` (`parsepool.py`) is the loop-side handle on the workers.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re

from selectolax.lexbor import LexborHTMLParser, LexborNode
from w3lib.encoding import html_to_unicode

from scraper.models import ExtractRule, ParseFailure, ParseJob, ParseResult
from scraper.urls import UrlPolicy, canonicalize, resolve_links

_INVISIBLE = ["script", "style", "noscript", "template"]


def parse_page(job: ParseJob) -> ParseResult:
    """Decode and parse one HTML page; never raises on hostile markup."""
    encoding, html = decode_html(job.body, job.content_type)
    tree = LexborHTMLParser(_utf8_source(job.body, encoding, html))
    base = _base_url(tree, job.url, job.policy)
    fields = {rule.name: _extract(tree, rule) for rule in job.rules.rules_for(job.url)}
    title_node = tree.css_first("title")
    canonical = _attr(tree.css_first('link[rel~="canonical" i][href]'), "href")
    hrefs = [node.attributes.get("href") or "" for node in tree.css("a[href], area[href]")]
    links, follow, cut = resolve_links(hrefs, base, job.policy, job.scope)
    tree.strip_tags(_INVISIBLE)
    body = tree.body
    # skip_empty drops the whitespace-only text nodes between tags, which collapsing would
    # fold into the separators anyway: the same text, with fewer runs to find.
    data = _collapse(body.text(separator=" ", skip_empty=True)) if body is not None else b""
    text = data.decode("utf-8", "surrogatepass")
    return ParseResult(
        encoding=encoding,
        title=_clean(title_node.text()) or None if title_node is not None else None,
        description=_attr(tree.css_first('meta[name="description" i][content]'), "content"),
        canonical=canonicalize(canonical, base, job.policy) if canonical else None,
        text_length=len(text),
        text_hash=hashlib.blake2b(data, digest_size=16).hexdigest(),
        text=text if job.store_text else None,
        links_json=json.dumps(links, ensure_ascii=False),
        follow=follow,
        fields_json=json.dumps(fields, ensure_ascii=False) if fields else None,
        links_cut=cut,
    )


def parse_pages(jobs: list[ParseJob]) -> list[ParseResult | ParseFailure]:
    """parse_page for each job, sent to a worker as one batch; a page the parser fails on gives a
    ParseFailure and the others are still parsed."""
    outcomes: list[ParseResult | ParseFailure] = []
    for job in jobs:
        try:
            outcomes.append(parse_page(job))
        except Exception as exc:  # whatever one page did, the batch goes on
            outcomes.append(ParseFailure(f"{type(exc).__name__}: {exc}"))
    return outcomes


def decode_html(body: bytes, content_type: str | None) -> tuple[str, str]:
    """(encoding, text): BOM, then the HTTP charset, then <meta charset>, then detection."""
    return html_to_unicode(content_type, body, auto_detect_fun=_detect_encoding)


def _utf8_source(body: bytes, encoding: str, html: str) -> bytes | str:
    """What to give Lexbor: the body's own bytes when they are the page's UTF-8 (or ASCII in an
    encoding that reads ASCII as ASCII), so Lexbor need not re-encode the decoded text (~40% of
    its parse time on a 40 KB page); otherwise the decoded text. A U+FFFD in the text may be an
    invalid byte that Lexbor would read its own way, so such a page goes as text too."""
    name = codecs.lookup(encoding).name
    if (name == "utf-8" and "\ufffd" not in html) or (name in _ASCII_READERS and body.isascii()):
        return body.removeprefix(codecs.BOM_UTF8)
    return html


_ASCII_READERS = frozenset({"ascii", "cp1252", "iso8859-1", "iso8859-15", "cp1250", "cp1251"})


def _detect_encoding(body: bytes) -> str | None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        # chardet, not charset-normalizer: the latter reads plain French latin-1 as cp1257.
        # Imported here: most pages declare their encoding, and a worker starts sooner without.
        import chardet

        return chardet.detect(body[:65536]).get("encoding")
    return "utf-8"


def _base_url(tree: LexborHTMLParser, page_url: str, policy: UrlPolicy) -> str:
    href = _attr(tree.css_first("base[href]"), "href")
    return (canonicalize(href, page_url, policy) or page_url) if href else page_url


def _extract(tree: LexborHTMLParser, rule: ExtractRule) -> str | list[str] | None:
    if rule.all:
        values = (_trim(_take(node, rule), rule.regex) for node in tree.css(rule.css))
        return [v for v in values if v is not None]
    node = tree.css_first(rule.css)
    return _trim(_take(node, rule), rule.regex) if node is not None else None


def _take(node: LexborNode, rule: ExtractRule) -> str | None:
    if rule.take == "html":
        return node.html
    if rule.take == "attr":
        return node.attributes.get(rule.attr or "")
    return _clean(node.text(separator=" "))


def _trim(value: str | None, regex: str | None) -> str | None:
    """The regex's first group (or whole match) in `value`; None when it does not match. `re`
    caches compiled patterns, so a worker compiles each rule's once."""
    if value is None or regex is None:
        return value
    match = re.search(regex, value)
    if match is None:
        return None
    return match.group(1) if match.re.groups else match.group(0)


def _attr(node: LexborNode | None, name: str) -> str | None:
    if node is None:
        return None
    value = node.attributes.get(name)
    return value.strip() or None if value else None


def _clean(text: str) -> str:
    """Runs of whitespace (ASCII, and the no-break space) become one space; ends trimmed."""
    return _collapse(text).decode("utf-8", "surrogatepass")


def _collapse(text: str) -> bytes:
    """`_clean`, as UTF-8 bytes (what the text's hash is taken of).

    The same as `b" ".join(data.split())`, at half its cost on a 40 KB page and a third on a
    1.5 MB one: split makes an object of every word, while here every kind of whitespace becomes
    a space (`translate`) and a regex that starts with a literal finds only the runs. On UTF-8
    bytes, since no byte of a multi-byte character is ASCII whitespace; the rarer Unicode spaces
    are kept as they are."""
    data = text.replace("\xa0", " ").encode("utf-8", "surrogatepass").translate(_ASCII_SPACES)
    return _SPACE_RUNS.sub(b" ", data).strip(b" ")


_ASCII_SPACES = bytes.maketrans(b"\t\n\r\x0b\x0c", b"     ")
_SPACE_RUNS = re.compile(rb"  +")


def warm_up(_: None) -> None:
    """Run in each worker at start so the first real page does not pay for imports."""
    parse_page(ParseJob(url="http://localhost/", body=b"<title>x</title>", content_type=None))
