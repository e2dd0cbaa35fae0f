"""The [extract] table → ExtractRules and RuleSets, every selector and regex compiled once here so
a broken one stops the program at start-up with the rule's name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import regex as re
from selectolax.lexbor import LexborHTMLParser, SelectolaxError

from scraper.config.checks import shorten, show, suggest
from scraper.errors import ConfigError
from scraper.models import Extraction, ExtractRule, RuleSet

EXTRACT_KEYS = ("css", "take", "attr", "all", "regex")
TAKES = ("text", "html", "attr")
RULE_SETS = "for"  # [[extract.for]]: rule sets for the pages whose URL matches `url`


def build_extraction(table: Mapping[str, Any]) -> Extraction:
    """`name = rule` pairs apply to every page; `[[extract.for]]` tables are rule sets, each with
    `url` (a glob or a list of globs) and its own `name = rule` pairs."""
    every: list[ExtractRule] = []
    sets: list[RuleSet] = []
    problems: list[str] = []
    for name, spec in table.items():
        try:
            if name == RULE_SETS and isinstance(spec, list):
                sets = [_build_rule_set(f"extract.for[{n}]", s) for n, s in enumerate(spec, 1)]
            else:
                every.append(_build_rule(f"extract.{shorten(name)}", name, spec))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(*problems)
    return Extraction(every=tuple(every), sets=tuple(sets))


def _build_rule_set(where: str, spec: Any) -> RuleSet:
    if not isinstance(spec, dict):
        raise ConfigError(f'{where}: must be a table ([[extract.for]] with url = "...")')
    urls = spec.get("url")
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
        raise ConfigError(
            f'{where}: needs url = "<glob>" (or a list of them), e.g. url = "*/product/*"'
        )
    rules = tuple(
        _build_rule(f"{where}.{shorten(name)}", name, rule)
        for name, rule in spec.items()
        if name != "url"
    )
    if not rules:
        raise ConfigError(f'{where}: has no fields; add some, e.g. price = "p.price"')
    return RuleSet(urls=tuple(urls), rules=rules)


def _build_rule(where: str, name: str, spec: Any) -> ExtractRule:
    if isinstance(spec, str):
        spec = {"css": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f'{where}: must be a CSS selector string or a table {{ css = "..." }}')
    for key in spec:
        if key not in EXTRACT_KEYS:
            raise ConfigError(
                f"{where}.{shorten(key)}: unknown key{suggest(key, EXTRACT_KEYS, where)}"
            )
    css = spec.get("css")
    if not isinstance(css, str) or not css.strip():
        raise ConfigError(f'{where}: needs css = "<selector>"')
    attr = spec.get("attr")
    take = spec.get("take", "attr" if attr is not None else "text")
    if take not in TAKES:
        raise ConfigError(f"{where}.take = {show(take)}: must be one of {', '.join(TAKES)}")
    if take == "attr" and (not isinstance(attr, str) or not attr):
        raise ConfigError(f'{where}: take = "attr" needs attr = "<attribute name>"')
    every = spec.get("all", False)
    if not isinstance(every, bool):
        raise ConfigError(f"{where}.all = {show(every)}: must be true or false")
    regex = spec.get("regex")
    if regex is not None:
        _check_regex(where, regex)
    _check_selector(where, css)
    return ExtractRule(name=name, css=css, take=take, attr=attr, all=every, regex=regex)


def _check_regex(where: str, regex: Any) -> None:
    if not isinstance(regex, str) or not regex:
        raise ConfigError(f"{where}.regex = {show(regex)}: must be a regular expression string")
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"{where}: regex {shorten(repr(regex))} does not compile: {exc}") from exc
    if compiled.groups > 1:
        raise ConfigError(
            f"{where}: regex {shorten(repr(regex))} has {compiled.groups} groups; use at most one "
            "(its match is the value), or (?:...) for the others"
        )


def _check_selector(where: str, css: str) -> None:
    try:
        LexborHTMLParser("<html></html>").css(css)
    except (SelectolaxError, ValueError) as exc:
        selector = shorten(repr(css))
        raise ConfigError(f"{where}: CSS selector {selector} does not compile: {exc}") from exc
