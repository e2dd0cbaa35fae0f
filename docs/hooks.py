"""mkdocs hooks: the reference pages' generated parts, put where their page has the marker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scraper.cli.reference import render_cli_reference
from scraper.config.reference import render_reference

GENERATED: dict[str, Callable[[], str]] = {
    "<!-- generated: cli -->": render_cli_reference,
    "<!-- generated: config -->": render_reference,
}


def on_page_markdown(markdown: str, **_: Any) -> str:
    for marker, render in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown
