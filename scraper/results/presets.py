"""Named queries users need every day: `scraper query --preset NAME`.

Each is plain SQL, shown as is in docs/guides/database.md, so it is also a starting point for
one's own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    about: str
    sql: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "broken-links",
            "links to pages that failed: who links where, and what went wrong",
            "SELECT l.from_url AS page, l.to_url AS link, p.status, p.error_kind, p.error\n"
            "FROM links l JOIN pages p ON p.url = l.to_url\n"
            "WHERE p.error_kind IS NOT NULL\n"
            "ORDER BY l.from_url, l.to_url",
        ),
        Preset(
            "slow-pages",
            "the 20 slowest responses",
            "SELECT url, CAST(round(elapsed_ms) AS INTEGER) AS ms, bytes, status FROM pages\n"
            "WHERE elapsed_ms IS NOT NULL\n"
            "ORDER BY elapsed_ms DESC LIMIT 20",
        ),
        Preset(
            "missing-titles",
            "HTML pages fetched fine that have no <title>",
            "SELECT url, depth, referrer FROM pages\n"
            "WHERE error_kind IS NULL AND encoding IS NOT NULL AND title IS NULL\n"
            "ORDER BY url",
        ),
        Preset(
            "duplicates",
            "the same visible text under several URLs",
            "SELECT text_hash, count(*) AS copies, group_concat(url, ' ') AS urls FROM pages\n"
            "WHERE text_hash IS NOT NULL\n"
            "GROUP BY text_hash HAVING count(*) > 1\n"
            "ORDER BY copies DESC, urls",
        ),
        Preset(
            "status-summary",
            "how many pages per HTTP status and error kind",
            "SELECT status, error_kind, count(*) AS pages FROM pages\n"
            "GROUP BY status, error_kind\n"
            "ORDER BY pages DESC, status",
        ),
    ]
}
