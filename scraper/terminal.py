"""Text from the web, made safe to print on a terminal.

A page title, an HTTP reason phrase or a host name is whatever a stranger wrote. Printed raw, its
control characters are commands to the terminal: clear the screen, rename the window, move the
cursor to forge a line, plant a hyperlink (OSC 8). `visible()` shows them instead, as escapes
(`\\x1b`), the way `git` and `ls` do, and so are bidirectional overrides (which reorder what the
eye reads). JSON output escapes them by itself; CSV and `--out` files are data, left as data.
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL (all of Unicode's Cc category), and the bidirectional embeddings,
# overrides and isolates (U+202A-U+202E, U+2066-U+2069).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every character that would act on a terminal shown as an escape."""
    return _UNSAFE.sub(_escape, text)
