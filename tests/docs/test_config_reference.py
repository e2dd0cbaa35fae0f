"""config.toml, the manual's configuration reference and the config sections agree: every key in
each, and the same defaults."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from scraper.config import SECTIONS
from scraper.config.reference import config_keys, render_reference

ROOT = Path(__file__).resolve().parents[2]
CONFIG_TOML = ROOT / "config.toml"


def _check(dotted: str, value: object) -> object:
    section, name = dotted.split(".")
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
    return fields[name].metadata["check"](value)


def _comments_above_each_key() -> dict[str, str]:
    """Each key of config.toml → the comment lines right above it (keys that follow one another
    share the comment above the first)."""
    comments: dict[str, str] = {}
    section, block, last_was_key = "", [], False
    for line in CONFIG_TOML.read_text().splitlines():
        if table := re.fullmatch(r"\[+([a-z_.]+)\]+", line.strip()):
            section, block, last_was_key = table.group(1), [], False
        elif line.startswith("#"):
            block = [] if last_was_key else block
            block.append(line)
            last_was_key = False
        elif key := re.match(r"([a-z_]+) = ", line):
            comments[f"{section}.{key.group(1)}"] = "\n".join(block)
            last_was_key = True
    return comments


def test_config_toml_and_the_sections_have_the_same_keys() -> None:
    raw = tomllib.loads(CONFIG_TOML.read_text())
    in_file = {f"{s}.{k}" for s, table in raw.items() if s in SECTIONS for k in table}
    assert in_file == {key.dotted for key in config_keys()}


def test_config_toml_shows_each_default_or_says_it() -> None:
    """config.toml's value is the default, or the comment above the key says the default (as
    `# ... Default: 0.`), so the file never misleads about what an absent key means."""
    raw = tomllib.loads(CONFIG_TOML.read_text())
    comments = _comments_above_each_key()
    for key in config_keys():
        value = raw[key.section][key.name]
        if _check(key.dotted, value) != key.default:
            assert f"Default: {key.shown}" in comments[key.dotted], f"{key.dotted} = {value!r}"


def test_the_comments_are_read_as_the_test_means() -> None:
    comments = _comments_above_each_key()
    assert comments["crawl.max_depth"] == "# How many links away from a seed to go; 0 = no limit."
    assert comments["crawl.exclude"] == comments["crawl.include"]  # one comment for both


def test_the_reference_has_every_key_with_its_default() -> None:
    reference = render_reference()
    for key in config_keys():
        assert f"### `{key.dotted}` {{#{key.dotted}}}" in reference
        assert f"default `{key.name} = {key.shown}`" in reference
        assert key.doc.strip(), f"{key.dotted} has no doc"
        # The default as the reference writes it is the default the loader gives.
        written = tomllib.loads(f"v = {key.shown}")["v"]
        assert _check(key.dotted, written) == key.default, key.dotted


def test_the_reference_has_no_key_the_sections_lack() -> None:
    documented = set(re.findall(r"^### `([a-z_]+\.[a-z_]+)`", render_reference(), re.MULTILINE))
    assert documented == {key.dotted for key in config_keys()}
