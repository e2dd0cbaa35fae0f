"""The parse stage: HTML bytes → ParseResult, in worker processes.

`parse_page` is a top-level function of picklable values: it runs in a worker process, so it
knows nothing of asyncio, sessions or the database, and this module imports none of them (a
worker starts sooner). Its answer depends on its job alone; the one state it keeps is a memo of
resolved links (`urls.resolve_links`), which changes how fast it answers, never what.
`ParsePool` (`pool.py`) is the loop-side handle on the workers; `source.py` picks the encoding and
what Lexbor reads, `text.py` defines the visible text and its hash.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

import regex
from selectolax.lexbor import LexborHTMLParser, LexborNode

from scraper.models import ExtractRule, ParseFailure, ParseJob, ParseResult, SpiderCall
from scraper.parse.shown import shown_text
from scraper.parse.source import parse_html
from scraper.parse.text import INVISIBLE, text_hash, visible_text
from scraper.spider.call import Outcome, call_spider
from scraper.spider.page import Page
from scraper.urls import UrlPolicy, canonicalize, resolve_links


def parse_page(job: ParseJob) -> ParseResult:
    """Decode and parse one HTML page; never raises on hostile markup."""
    encoding, tree = parse_html(job.body, job.content_type)
    base = _base_url(tree, job.url, job.policy)
    spider = _call_spider(job, job.spider, encoding, base, tree) if job.spider else None
    fields, field_errors = _extract_all(tree, job.rules.rules_for(job.url), job.regex_timeout)
    title_node = tree.css_first("title")
    canonical = _attr(tree.css_first('link[rel~="canonical" i][href]'), "href")
    hrefs = [node.attributes.get("href") or "" for node in tree.css("a[href], area[href]")]
    links, follow, cut = resolve_links(hrefs, base, job.policy, job.scope)
    if spider is not None:
        follow = ()  # with a spider, only what its callbacks ask for is followed
    tree.strip_tags(INVISIBLE)  # before the description too, as ever: one in <noscript> is not
    description = _attr(tree.css_first('meta[name="description" i][content]'), "content")
    text = visible_text(tree) if job.text != "off" else None
    return ParseResult(
        encoding=encoding,
        title=_clean(title_node.text()) or None if title_node is not None else None,
        description=description,
        canonical=canonicalize(canonical, base, job.policy) if canonical else None,
        text_length=len(text) if text is not None else None,
        text_hash=text_hash(text) if text is not None else None,
        text=text if job.text == "store" else None,
        links_json=json.dumps(links, ensure_ascii=False),
        follow=follow,
        fields_json=json.dumps(fields, ensure_ascii=False) if fields else None,
        links_cut=cut,
        field_errors_json=json.dumps(field_errors, ensure_ascii=False) if field_errors else None,
        items=spider.items if spider else (),
        requests=spider.requests if spider else (),
        callback_error=spider.error if spider else None,
        callback_trace=spider.trace if spider else None,
    )


def _call_spider(
    job: ParseJob, call: SpiderCall, encoding: str, base: str, tree: LexborHTMLParser
) -> Outcome:
    """The spider's callback on the page, on the tree as parsed (before what a browser does not
    show is stripped: a callback reads `<script>` data)."""
    page = Page(
        url=job.url,
        base=base,
        status=call.status,
        headers=call.headers,
        meta=json.loads(call.meta) if call.meta else {},
        depth=call.depth,
        body=job.body,
        encoding=encoding,
        tree=tree,
    )
    return call_spider(call, page, job.policy, job.scope)


def parse_pages(jobs: list[ParseJob]) -> list[ParseResult | ParseFailure]:
    """parse_page for each job, sent to a worker as one batch; a page the parser fails on gives a
    ParseFailure and the others are still parsed."""
    outcomes: list[ParseResult | ParseFailure] = []
    for job in jobs:
        try:
            outcomes.append(parse_page(job))
        except (KeyboardInterrupt, SystemExit):
            raise
        # BaseException: a library written in Rust panics with pyo3's PanicException, which
        # derives from BaseException; whatever one page did costs that page, and the batch goes on.
        except BaseException as exc:
            outcomes.append(ParseFailure(f"{type(exc).__name__}: {exc}"))
    return outcomes


def _base_url(tree: LexborHTMLParser, page_url: str, policy: UrlPolicy) -> str:
    href = _attr(tree.css_first("base[href]"), "href")
    return (canonicalize(href, page_url, policy) or page_url) if href else page_url


Field = str | list[str] | None


class _GaveUp(Exception):
    """A field's regex ran past parse.regex_timeout on one value."""


def _extract_all(
    tree: LexborHTMLParser, rules: tuple[ExtractRule, ...], timeout: float
) -> tuple[dict[str, Field], dict[str, str]]:
    """Each rule's value, and the rules that gave up (their value None) with why."""
    fields: dict[str, Field] = {}
    errors: dict[str, str] = {}
    for rule in rules:
        try:
            fields[rule.name] = _extract(tree, rule, timeout)
        except _GaveUp as exc:
            fields[rule.name] = None
            errors[rule.name] = str(exc)
    return fields, errors


def _extract(tree: LexborHTMLParser, rule: ExtractRule, timeout: float) -> Field:
    if rule.all:
        values = (_trim(_take(node, rule), rule.regex, timeout) for node in tree.css(rule.css))
        return [v for v in values if v is not None]
    node = tree.css_first(rule.css)
    return _trim(_take(node, rule), rule.regex, timeout) if node is not None else None


def _take(node: LexborNode, rule: ExtractRule) -> str | None:
    if rule.take == "html":
        return node.html
    if rule.take == "attr":
        return node.attributes.get(rule.attr or "")
    return shown_text(node)


def _trim(value: str | None, pattern: str | None, timeout: float) -> str | None:
    """The pattern's first group (or whole match) in `value`; None when it does not match.

    The `regex` package, not `re`: its `timeout` stops a backtracking pattern inside the match
    (in C), where `re` runs to the end; the page's own limit (parse.timeout) would otherwise end
    the worker and cost the whole page."""
    if value is None or pattern is None:
        return value
    try:
        match = _compiled(pattern).search(value, timeout=timeout)
    except TimeoutError as exc:
        raise _GaveUp(
            f"regex over its time ({timeout:g} s) on a value of {len(value)} characters"
        ) from exc
    if match is None:
        return None
    return match.group(1) if match.re.groups else match.group(0)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


def _attr(node: LexborNode | None, name: str) -> str | None:
    if node is None:
        return None
    value = node.attributes.get(name)
    return value.strip() or None if value else None


def _clean(text: str) -> str:
    """Runs of whitespace (ASCII, and the no-break space) become one space; ends trimmed."""
    return _collapse(text).decode("utf-8", "surrogatepass")


def _collapse(text: str) -> bytes:
    """`_clean`, as UTF-8 bytes (titles and fields; until schema v5, the visible text too).

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
