"""The command-line reference the manual shows (docs/reference/cli.md), read from the parsers
themselves (main.build_parser), so every command and option `--help` knows is documented."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from scraper.cli.common import common_options
from scraper.cli.main import build_parser

# Wide enough that a usage line wraps as a reader's terminal would not make it.
_WIDTH = 100


def render_cli_reference() -> str:
    """The reference in Markdown: the options every command takes, then one section per command
    (anchored `#scraper-COMMAND`), with its usage and a table of its own arguments."""
    common = {action.dest for action in common_options()._actions}
    lines = ["## Options every command takes", "", *_table(common_options()._actions), ""]
    for name, parser, summary in commands():
        lines += [f"## `scraper {name}` {{#scraper-{name}}}", ""]
        lines += [parser.description or summary, ""]
        own = [a for a in parser._actions if a.dest not in common and a.dest != "help"]
        lines += ["```", _usage(parser).rstrip(), "```", ""]
        if own:
            lines += [*_table(own), ""]
        if parser.epilog:
            lines += ["```", parser.epilog.rstrip(), "```", ""]
    return "\n".join(lines)


def commands() -> Iterator[tuple[str, argparse.ArgumentParser, str]]:
    """Each command's name, parser and one-line help, in `scraper --help`'s order."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, parser in action.choices.items():
                yield name, parser, helps.get(name, "")


def option_names(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every option string (`--max-pages`, `-q`) a parser takes."""
    for action in parser._actions:
        yield from action.option_strings


def _table(actions: list[argparse.Action]) -> list[str]:
    rows = ["| argument | meaning |", "| --- | --- |"]
    for action in actions:
        if action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        rows.append(f"| {_spelling(action)} | {_escape(_meaning(action))} |")
    return rows


def _spelling(action: argparse.Action) -> str:
    metavar = action.metavar or (action.dest.upper() if action.nargs != 0 else None)
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    if not action.option_strings:
        more = " ..." if action.nargs in ("*", "+") else ""
        return f"`{metavar}{more}`"
    names = ", ".join(action.option_strings)
    if action.nargs == 0:
        return f"`{names}`"
    if action.choices is not None:
        metavar = "|".join(str(choice) for choice in action.choices)
    return f"`{names} {metavar}`"


def _meaning(action: argparse.Action) -> str:
    parts = [action.help or ""]
    said = "default" in parts[0]  # the help texts name most defaults themselves
    if action.default not in (None, False, [], argparse.SUPPRESS) and not said:
        parts.append(f"default: `{action.default}`")
    if action.nargs == "?":
        parts.append("optional")
    return "; ".join(part for part in parts if part)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help()


def _escape(text: str) -> str:
    return text.replace("|", "\\|")
