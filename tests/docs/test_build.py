"""The manual builds with warnings as errors (broken links and anchors included), and its
generated references name every config key, command and option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scraper.cli.reference import commands, option_names
from scraper.config.reference import config_keys

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr
    return out


def test_the_manual_builds_strictly(site: Path) -> None:
    for page in ("index.html", "guides/crawling/index.html", "changelog/index.html"):
        assert (site / page).is_file(), page
    changelog = (site / "changelog/index.html").read_text()
    assert "Unreleased" in changelog  # CHANGELOG.md is included, not just linked


def test_the_configuration_reference_anchors_every_key(site: Path) -> None:
    html = (site / "reference/configuration/index.html").read_text()
    for key in config_keys():
        assert f'id="{key.dotted}"' in html, key.dotted


def test_the_cli_reference_names_every_command_and_option(site: Path) -> None:
    html = (site / "reference/cli/index.html").read_text()
    for name, parser, _ in commands():
        assert f'id="scraper-{name}"' in html, name
        for option in option_names(parser):
            assert option in html, f"scraper {name} {option}"
