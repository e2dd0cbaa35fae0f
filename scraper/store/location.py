"""What `storage.db` names: a SQLite file's path, or a PostgreSQL server's URL; and that URL as
it may be shown (logs, the summary, `scraper crawls`, the crawls table): without its password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(db: str) -> bool:
    return db.startswith(POSTGRES_SCHEMES)


def redact(db: str) -> str:
    """`db` without a password (in the user part or a `password=` parameter); a path as it is."""
    if not is_postgres(db):
        return db
    parts = urlsplit(db)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hosts = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hosts}" if user else hosts
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    # Built by hand: urlunsplit drops the "//" of an empty host (postgresql:///db?host=/run/pg).
    text = f"{parts.scheme}://{netloc}{parts.path}"
    if query:
        text += "?" + urlencode(query, safe="/")
    return text


def password_of(db: str) -> str | None:
    """The password written in the URL, if any (to blank it out of a driver's messages)."""
    if not is_postgres(db):
        return None
    parts = urlsplit(db)
    if parts.password:
        return parts.password
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password" and value:
            return value
    return None
