"""config.toml → typed frozen sections; every bad value is one clear ConfigError."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scraper.config import (
    SECTIONS,
    Config,
    auto_workers,
    build_config,
    load_config,
    quota_cpus,
    usable_cpus,
)
from scraper.errors import ConfigError
from scraper.models import ExtractRule, RuleSet

ROOT = Path(__file__).resolve().parents[2]


def test_no_file_means_defaults() -> None:
    assert load_config(None) == Config()


def test_sections_are_frozen() -> None:
    config = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fetch.concurrency = 3  # type: ignore[misc]


def test_shipped_config_toml_shows_every_key() -> None:
    raw = tomllib.loads((ROOT / "config.toml").read_text())
    for name, cls in SECTIONS.items():
        assert set(raw[name]) == {f.name for f in dataclasses.fields(cls)}, name
    config = load_config(ROOT / "config.toml")
    defaults = Config()
    assert config.fetch == defaults.fetch
    assert config.storage == defaults.storage
    assert config.parse == defaults.parse


def test_overrides_and_values() -> None:
    config = load_config(
        None,
        overrides=[
            "fetch.concurrency=32",
            "storage.db=data/other.db",
            'crawl.seeds=["http://Example.com:80/a#x"]',
        ],
        values={"crawl.max_pages": 5},
    )
    assert config.fetch.concurrency == 32
    assert config.storage.db == "data/other.db"
    assert config.crawl.seeds == ("http://example.com/a",)
    assert config.crawl.allowed_domains == ("example.com",)
    assert config.crawl.max_pages == 5


def test_auto_workers_leave_the_loop_a_cpu_from_three_up() -> None:
    assert [auto_workers(cpus) for cpus in (1, 2, 3, 4, 8, 64)] == [1, 2, 2, 3, 7, 63]


def test_a_cgroup_cpu_quota_caps_the_usable_cpus(tmp_path: Path) -> None:
    texts = ["max 100000\n", "200000 100000\n", "150000 100000", "50000 100000", "", "x y"]
    assert [quota_cpus(text) for text in texts] == [None, 2, 2, 1, None, None]
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("100000 100000\n")  # a container given one CPU
    assert usable_cpus(cpu_max) == 1
    assert usable_cpus(tmp_path / "absent") == len(os.sched_getaffinity(0))


def test_auto_counts_the_cpus_the_process_may_use() -> None:
    """Pinned to one CPU (as taskset or a container's cpuset would), "auto" is one worker."""
    script = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from scraper.config import build_config;"
        "print(build_config({'parse': {'workers': 'auto'}}).parse.workers)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


@pytest.mark.parametrize(
    ("value", "workers"), [(0, 0), (3, 3), ("auto", auto_workers(usable_cpus()))]
)
def test_parse_workers_accepts_auto_zero_and_counts(value: object, workers: int) -> None:
    assert load_config(None, values={"parse.workers": value}).parse.workers == workers


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ({}, "hash"),
        ({"parse.text": "off"}, "off"),
        ({"parse.text": "store"}, "store"),
        ({"parse.store_text": True}, "store"),  # the older key still works
        ({"parse.store_text": True, "parse.text": "hash"}, "store"),
        ({"parse.store_text": False, "parse.text": "store"}, "store"),
    ],
)
def test_parse_text_and_its_older_key(values: dict[str, object], text: str) -> None:
    parse = load_config(None, values=values).parse
    assert (parse.text, parse.store_text) == (text, text == "store")


def test_extract_rules_in_both_forms() -> None:
    config = build_config(
        {
            "extract": {
                "title": "h1",
                "links": {"css": "a", "attr": "href", "all": True},
                "box": {"css": "div", "take": "html"},
            }
        }
    )
    assert config.extract.every == (
        ExtractRule(name="title", css="h1"),
        ExtractRule(name="links", css="a", take="attr", attr="href", all=True),
        ExtractRule(name="box", css="div", take="html"),
    )
    assert config.extract.sets == ()


def test_rule_sets_per_url_pattern() -> None:
    config = build_config(
        {
            "extract": {
                "title": "h1",
                "for": [
                    {"url": "*/product/*", "price": {"css": "p.price", "regex": r"[\d.]+"}},
                    {"url": ["*/a/*", "*/b/*"], "title": "h2", "sku": {"css": "b", "all": True}},
                ],
            }
        }
    )
    product, ab = config.extract.sets
    assert product == RuleSet(
        urls=("*/product/*",), rules=(ExtractRule(name="price", css="p.price", regex=r"[\d.]+"),)
    )
    assert ab.urls == ("*/a/*", "*/b/*")
    rules_for = config.extract.rules_for
    assert [r.name for r in rules_for("http://x.org/product/1")] == ["title", "price"]
    assert [r.css for r in rules_for("http://x.org/b/1")] == ["h2", "b"]  # a later name wins
    assert [r.css for r in rules_for("http://x.org/")] == ["h1"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"fetch": {"concurrency": 0}}, "fetch.concurrency = 0: must be an integer ≥ 1"),
        (
            {"fetch": {"concurency": 4}},
            "fetch.concurency: unknown key (did you mean fetch.concurrency?)",
        ),
        ({"fetch": {"read_timeout": -1}}, "fetch.read_timeout = -1: must be a number > 0"),
        ({"fetch": {"retries": "3"}}, 'fetch.retries = "3": must be an integer'),
        ({"fetch": {"concurrency": True}}, "fetch.concurrency = true: must be an integer"),
        (
            {"crawl": {"seeds": ["ftp://x.org/"]}},
            'crawl.seeds = ["ftp://x.org/"]: "ftp://x.org/" is not an http(s) URL',
        ),
        ({"crawl": {"seeds": ["example.com"]}}, '"example.com" is not an http(s) URL'),
        ({"crawl": {"seeds": "http://a.org/"}}, 'crawl.seeds = "http://a.org/": must be a list'),
        ({"crawl": {"allowed_domains": ["http://a.org/"]}}, "is not a host name"),
        (
            {"parse": {"workers": -1}},
            'parse.workers = -1: must be "auto", 0 (parse inline, no processes) or an integer ≥ 1',
        ),
        ({"parse": {"workers": "two"}}, 'parse.workers = "two": must be "auto", 0'),
        ({"parse": {"nice": 20}}, "parse.nice = 20: must be an integer ≤ 19"),
        ({"parse": {"nice": -1}}, "parse.nice = -1: must be an integer ≥ 0"),
        ({"parse": {"text": "yes"}}, 'parse.text = "yes": must be one of "hash", "store", "off"'),
        (
            {"parse": {"text": "off", "store_text": True}},
            'parse.store_text = true contradicts parse.text = "off"',
        ),
        ({"storage": {"db": ""}}, 'storage.db = "": must be a non-empty string'),
        ({"fecth": {}}, "[fecth]: unknown section (did you mean fetch?)"),
        ({"fetch": 3}, "fetch: must be a table"),
        ({"extract": {"bad": "a[["}}, "extract.bad: CSS selector 'a[[' does not compile"),
        ({"extract": {"x": {"css": "a", "take": "attr"}}}, 'extract.x: take = "attr" needs attr'),
        (
            {"extract": {"x": {"css": "a", "atr": "href"}}},
            "extract.x.atr: unknown key (did you mean extract.x.attr?)",
        ),
        (
            {"extract": {"x": {"css": "a", "take": "json"}}},
            'extract.x.take = "json": must be one of',
        ),
        ({"extract": {"x": 5}}, "extract.x: must be a CSS selector string or a table"),
        (
            {"extract": {"x": {"css": "a", "regex": "(unclosed"}}},
            "extract.x: regex '(unclosed' does not compile: missing )",
        ),
        ({"extract": {"x": {"css": "a", "regex": "(a)(b)"}}}, "has 2 groups; use at most one"),
        ({"extract": {"for": [{"price": "p"}]}}, 'extract.for[1]: needs url = "<glob>"'),
        ({"extract": {"for": [{"url": "*"}]}}, "extract.for[1]: has no fields"),
        ({"extract": {"for": [3]}}, "extract.for[1]: must be a table"),
        (
            {"extract": {"for": [{"url": "*", "a": "p"}, {"url": "*/x", "price": "p[["}]}},
            "extract.for[2].price: CSS selector 'p[[' does not compile",
        ),
        (
            {"extract": {"for": [{"url": "*", "p": {"css": "a", "tak": "html"}}]}},
            "extract.for[1].p.tak: unknown key (did you mean extract.for[1].p.take?)",
        ),
    ],
)
def test_bad_values_are_one_clear_line(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build_config(raw)
    text = str(error.value)
    assert message in text
    assert "\n" not in text


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[fetch\nconcurrency = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_bad_set_syntax() -> None:
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(None, overrides=["concurrency=3"])


def test_every_mistake_is_reported_a_line_each() -> None:
    raw = {
        "nope": {},
        "fetch": {"concurency": 3, "read_timeout": "soon"},
        "parse": {"workers": -1},
        "extract": {"a": "p[[", "b": {"css": "p", "regex": "("}},
    }
    with pytest.raises(ConfigError) as error:
        build_config(raw)
    assert [line.split(":")[0] for line in error.value.lines] == [
        "[nope]",
        "fetch.concurency",
        'fetch.read_timeout = "soon"',
        "parse.workers = -1",
        "extract.a",
        "extract.b",
    ]
