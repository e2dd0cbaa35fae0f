"""What PostgreSQL's errors mean for the user: the explanations that live with this backend.

libpq's messages span lines ("...failed: Connection refused\\n\\tIs the server running...?"): a
user's error is one line, so they are joined. They never hold the password, but a message built
from a URL might: `explain_pg` blanks it out all the same.
"""

from __future__ import annotations

import psycopg


def one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def explain_pg(exc: psycopg.Error, secret: str | None = None) -> str:
    """The server's (or libpq's) message on one line, with what to do about the common ones."""
    text = one_line(str(exc)) or type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    if "password authentication failed" in text or "no password supplied" in text:
        return f"{text}: check the password (in the URL, PGPASSWORD or ~/.pgpass) and the user name"
    if "Connection refused" in text or "No such file or directory" in text:
        return f"{text}: is the server running there? (host, port, or the socket's folder)"
    if "does not exist" in text and "database" in text:
        return f"{text}: create it first (createdb NAME, or CREATE DATABASE)"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return f"{text}: the role may not do this; grant it, or connect as its owner"
    return text
