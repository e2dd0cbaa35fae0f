"""What SQLite's errors mean for the user: the explanations that live with this backend."""

from __future__ import annotations

import sqlite3


def explain_sqlite(exc: sqlite3.Error) -> str:
    """SQLite's message, with what to do about the two a user meets most."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return (
            f"{text}: the file or its folder is read-only; check permissions or pick another --db"
        )
    if "locked" in text or "busy" in text:
        return f"{text}: another program holds it (another crawl?); wait, or pick another --db"
    if "unable to open" in text:
        return f"{text}: is it a folder, or in a folder you may not write to?"
    return text
