"""Calling a spider's callback on a page, in a parse worker: what it yields becomes data.

- Items (`dict`s) go through the spider's `process_item` and are encoded as JSON here, so one
  that cannot be (a `datetime`, a set) is the page's error, named, before anything is stored.
- Requests are resolved against the page, canonicalised, given their identity (method, URL, body;
  `dont_filter`: the page's own and its place, see `identity`), their meta encoded as JSON, and
  kept if the crawl's scope allows them (its regexes run here, never on the event loop).
- Anything the callback raises costs this page only: no item and no request of it is kept, and
  the page is stored with `error_kind = 'callback'` and the exception's type and last line.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from scraper.models import CrawlRequest, SpiderCall, SpiderRef, request_key
from scraper.spider.api import Request, Spider
from scraper.spider.load import load_class
from scraper.spider.page import Page
from scraper.urls import Scope, UrlPolicy, resolve_each

# Headers that carry credentials: a request with one is refused rather than stored.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
# One instance per spider class per worker process, made on its first page.
_instances: dict[SpiderRef, Spider] = {}


class CallbackError(Exception):
    """What a callback yielded cannot be stored (meta or an item not JSON, a callback that is
    not there, something that is neither an item nor a request)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A callback's items (JSON), its requests (in scope), or why it failed, with the trace."""

    items: tuple[str, ...] = ()
    requests: tuple[CrawlRequest, ...] = ()
    error: str | None = None
    trace: str | None = None


def call_spider(call: SpiderCall, page: Page, policy: UrlPolicy, scope: Scope | None) -> Outcome:
    """Run the callback `call` names on `page`; never raises for the callback's faults."""
    try:
        spider = _instance(call.spider)
        method = getattr(spider, call.callback, None)
        if not callable(method):
            raise CallbackError(f"the spider has no method {call.callback!r}")
        items: list[str] = []
        asked: list[Request] = []
        for output in _outputs(method(page)):
            if isinstance(output, Request):
                asked.append(output)
            elif isinstance(output, Mapping):
                item = spider.process_item(dict(output), page)
                if item is not None:
                    items.append(_encode(item, f"item {len(items) + 1}"))
            elif output is not None:
                raise CallbackError(
                    f"yielded a {type(output).__name__}: a callback yields dicts (items) and "
                    "scraper.Request objects"
                )
        requests = _requests(asked, page, call, policy, scope, spider)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return Outcome(error=f"{call.callback}: {_one_line(exc)}", trace=traceback.format_exc())
    return Outcome(items=tuple(items), requests=requests)


def _requests(
    asked: list[Request],
    page: Page,
    call: SpiderCall,
    policy: UrlPolicy,
    scope: Scope | None,
    spider: Spider,
) -> tuple[CrawlRequest, ...]:
    """The requests a callback yielded, as frontier rows: canonical, in scope, each with its
    identity. Their URLs are resolved as a page's links are (`urls.resolve_each`: remembered per
    site, so a menu's links cost a look-up); one that is not http(s), or outside the scope, is
    dropped, as such a link would be."""
    answers = resolve_each((r.url for r in asked), page.base, policy, scope)
    kept: list[CrawlRequest] = []
    for place, (request, (url, allowed)) in enumerate(zip(asked, answers, strict=True)):
        if url is not None and allowed:
            kept.append(_request(request, url, call, place, spider))
    return tuple(kept)


def _instance(ref: SpiderRef) -> Spider:
    spider = _instances.get(ref)
    if spider is None:
        spider = _instances[ref] = load_class(ref)()
    return spider


def _outputs(returned: Any) -> Iterable[Any]:
    """What a callback gave: a generator, a list, one item or request, or None."""
    if returned is None:
        return ()
    if isinstance(returned, (Mapping, Request)):
        return (returned,)
    if isinstance(returned, (str, bytes)) or not isinstance(returned, Iterable):
        raise CallbackError(
            f"returned a {type(returned).__name__}: a callback yields (or returns a list of) "
            "dicts and scraper.Request objects"
        )
    return cast(Iterable[Any], returned)


def _request(
    asked: Request, url: str, call: SpiderCall, place: int, spider: Spider
) -> CrawlRequest:
    if (
        asked.callback == "parse"
        and asked.method == "GET"
        and not (asked.meta or asked.headers or asked.body or asked.dont_filter)
    ):
        return CrawlRequest(url)  # a plain link, the most common request by far
    if not isinstance(asked.callback, str) or not callable(getattr(spider, asked.callback, None)):
        raise CallbackError(f"request to {url}: the spider has no method {asked.callback!r}")
    if asked.headers:
        secret = sorted(CREDENTIAL_HEADERS & {name.lower() for name in asked.headers})
        if secret:
            raise CallbackError(
                f"request to {url}: a request is stored in the frontier (to be sent again after "
                f"a resume), and credentials never are: no {', '.join(secret)} header"
            )
    method = asked.method.upper()
    body = asked.body.encode() if isinstance(asked.body, str) else asked.body
    token = f"{call.identity} {place}" if asked.dont_filter else None
    return CrawlRequest(
        url=url,
        method=None if method == "GET" else method,
        headers=_encode(dict(asked.headers), f"headers of the request to {url}")
        if asked.headers
        else None,
        body=body,
        callback=None if asked.callback == "parse" else asked.callback,
        meta=_encode(dict(asked.meta), f"meta of the request to {url}") if asked.meta else None,
        key=request_key(url, method, body, token),
    )


def _encode(value: Any, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CallbackError(f"{what} is not JSON-serialisable: {exc}") from exc


def _one_line(exc: BaseException) -> str:
    """The exception's type and its message's last line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__
