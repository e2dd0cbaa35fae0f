"""The SQLite schema: each version's script, applied in order (`PRAGMA user_version` records the
version; `PRAGMA application_id` marks the file as ours)."""

from __future__ import annotations

from collections.abc import Sequence

APPLICATION_ID = 0x53435250  # "SCRP"

SCHEMA_V1 = """
CREATE TABLE crawls (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL,
    seeds       TEXT NOT NULL,
    config      TEXT NOT NULL,
    pages       INTEGER NOT NULL DEFAULT 0,
    errors      INTEGER NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    duration_s  REAL,
    counters    TEXT
);
CREATE TABLE pages (
    id           INTEGER PRIMARY KEY,
    url          TEXT NOT NULL UNIQUE,
    crawl_id     INTEGER NOT NULL REFERENCES crawls(id),
    depth        INTEGER NOT NULL,
    referrer     TEXT,
    status       INTEGER,
    final_url    TEXT,
    redirects    TEXT,
    content_type TEXT,
    fetched_at   TEXT NOT NULL,
    elapsed_ms   REAL,
    bytes        INTEGER,
    attempts     INTEGER NOT NULL,
    encoding     TEXT,
    title        TEXT,
    description  TEXT,
    canonical    TEXT,
    text_length  INTEGER,
    text_hash    TEXT,
    text         TEXT,
    fields       TEXT,
    error_kind   TEXT,
    error        TEXT
);
CREATE INDEX pages_crawl ON pages(crawl_id);
CREATE INDEX pages_text_hash ON pages(text_hash);
CREATE TABLE links (
    from_url TEXT NOT NULL,
    to_url   TEXT NOT NULL,
    PRIMARY KEY (from_url, to_url)
) WITHOUT ROWID;
CREATE INDEX links_to ON links(to_url);
"""

# v2: the frontier lives in the database (resumable crawls), and pages keep their validators
# for conditional re-crawls. A v1 crawl still marked running died without a frontier to resume.
SCHEMA_V2 = """
CREATE TABLE frontier (
    seq       INTEGER PRIMARY KEY,      -- discovery order
    crawl_id  INTEGER NOT NULL REFERENCES crawls(id),
    url       TEXT NOT NULL,
    host      TEXT NOT NULL,
    depth     INTEGER NOT NULL,
    referrer  TEXT,
    state     INTEGER NOT NULL DEFAULT 0,   -- 0 pending, 1 leased (in flight), 2 done
    UNIQUE (crawl_id, url)
);
CREATE INDEX frontier_pending ON frontier(crawl_id, host, state, seq);
ALTER TABLE pages ADD COLUMN etag TEXT;
ALTER TABLE pages ADD COLUMN last_modified TEXT;
UPDATE crawls SET status = 'interrupted' WHERE status = 'running';
"""

# v3: a redirect is a row of its own (its target in final_url, its chain length in the frontier's
# hops), so the hop list goes; and a view
# names pages whose content another page already has, or that point to a canonical elsewhere.
SCHEMA_V3 = """
ALTER TABLE pages DROP COLUMN redirects;
ALTER TABLE frontier ADD COLUMN hops INTEGER NOT NULL DEFAULT 0;
CREATE VIEW duplicates AS
SELECT p.url AS url, o.url AS duplicate_of, 'same text' AS why
FROM pages p JOIN pages o ON o.id = (SELECT min(id) FROM pages WHERE text_hash = p.text_hash)
WHERE p.text_hash IS NOT NULL AND p.text_length > 0 AND o.id <> p.id
UNION ALL
SELECT url, canonical, 'rel=canonical' FROM pages
WHERE canonical IS NOT NULL AND canonical <> url;
"""

# v4: a page's outgoing links are a JSON array in its own row (`pages.links`), and `links` is a
# view of the same two columns as the table it replaces. The table cost two B-tree inserts per link
# (its key and the to_url index), ~45 per page: most of the sink's time and of the file's size.
SCHEMA_V4 = """
ALTER TABLE pages ADD COLUMN links TEXT;
UPDATE pages SET links = (SELECT json_group_array(to_url) FROM links WHERE from_url = pages.url)
WHERE url IN (SELECT from_url FROM links);
DROP TABLE links;
CREATE VIEW links AS
SELECT p.url AS from_url, j.value AS to_url FROM pages p, json_each(p.links) j
WHERE p.links IS NOT NULL;
"""

# v5: the visible text's hash changes definition (scraper/parse/text.py): XXH3-128 of the text
# nodes stripped and joined by one space, where it was BLAKE2b-128 of the text with every
# whitespace run collapsed. Both are 32 hex digits, and the old ones cannot be recomputed (the text
# is seldom stored), so they are marked: an old hash never equals a new one, while pages stored
# before the upgrade still match each other in `duplicates`. A page fetched again gets a new hash.
SCHEMA_V5_TEXT_HASH = """
UPDATE pages SET text_hash = 'blake2b:' || text_hash WHERE text_hash IS NOT NULL;
"""

# v6: how many of a page's links were dropped (crawl.max_links_per_page, crawl.max_url_length):
# NULL for pages stored before, or not parsed.
SCHEMA_V6_LINKS_CUT = """
ALTER TABLE pages ADD COLUMN links_cut INTEGER;
"""

# v7: the seed list's digest and size: a crawl from a file of a million seeds keeps only a sample
# of them in `seeds` (a JSON list still, as before); a resumed crawl is matched on the digest
# (rows of older crawls have none, and are matched on `seeds`, as before).
SCHEMA_V7_SEEDS_DIGEST = """
ALTER TABLE crawls ADD COLUMN seeds_digest TEXT;
ALTER TABLE crawls ADD COLUMN seeds_count INTEGER;
CREATE INDEX crawls_seeds_digest ON crawls(seeds_digest);
"""

# v8: the [extract] fields that gave up on a page (a regex over parse.regex_timeout), as a JSON
# object of field name -> why; NULL when none did.
SCHEMA_V8_FIELD_ERRORS = """
ALTER TABLE pages ADD COLUMN field_errors TEXT;
"""

# v9: whether the page's last fetch found it unchanged (1: a 304 to a conditional request, its
# stored row kept; NULL: stored whole), so a re-crawl counts "not modified" apart from 2xx.
SCHEMA_V9_NOT_MODIFIED = """
ALTER TABLE pages ADD COLUMN not_modified INTEGER;
"""

# v10: spiders. A frontier row is a request: beside its URL, a spider's method, headers, body,
# callback and meta (NULL for a plain link: a GET for the default callback); its `url` is the
# request's identity (models.CrawlRequest.identity: the URL itself for a plain GET, so a crawl
# without a spider keys its rows as before). `items`: what the callbacks yielded, a JSON object
# a row, written in the transaction of the page that yielded it (exactly once, across kill -9 and
# resume); `url` is that page's (pages.url), `position` its place among the page's items.
SCHEMA_V10_SPIDERS = """
ALTER TABLE frontier ADD COLUMN method TEXT;
ALTER TABLE frontier ADD COLUMN headers TEXT;
ALTER TABLE frontier ADD COLUMN body BLOB;
ALTER TABLE frontier ADD COLUMN callback TEXT;
ALTER TABLE frontier ADD COLUMN meta TEXT;
CREATE TABLE items (
    id        INTEGER PRIMARY KEY,
    crawl_id  INTEGER NOT NULL REFERENCES crawls(id),
    url       TEXT NOT NULL,
    position  INTEGER NOT NULL,
    callback  TEXT NOT NULL,
    data      TEXT NOT NULL,
    UNIQUE (crawl_id, url, position)
);
"""

# v11: where the page's response record is in the WARC archive (storage.warc): the file's name in
# the folder, the offset and length of its gzip member, its WARC-Date and payload digest (what a
# 304's revisit record refers to, and what `export --format cdxj` writes). NULL: not archived.
SCHEMA_V11_WARC = """
ALTER TABLE pages ADD COLUMN warc_file TEXT;
ALTER TABLE pages ADD COLUMN warc_offset INTEGER;
ALTER TABLE pages ADD COLUMN warc_length INTEGER;
ALTER TABLE pages ADD COLUMN warc_date TEXT;
ALTER TABLE pages ADD COLUMN warc_digest TEXT;
"""

# v12: each host's cookie jar (fetch.cookies), as the crawl last changed it: a resumed crawl
# carries on with the cookies of the pages it stored (crawl/cookies.py).
SCHEMA_V12_COOKIES = """
CREATE TABLE cookies (
    crawl_id INTEGER NOT NULL REFERENCES crawls(id),
    host     TEXT NOT NULL,
    jar      TEXT NOT NULL,
    PRIMARY KEY (crawl_id, host)
) WITHOUT ROWID;
"""

MIGRATIONS: Sequence[str] = (
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5_TEXT_HASH, SCHEMA_V6_LINKS_CUT,
    SCHEMA_V7_SEEDS_DIGEST, SCHEMA_V8_FIELD_ERRORS, SCHEMA_V9_NOT_MODIFIED, SCHEMA_V10_SPIDERS,
    SCHEMA_V11_WARC, SCHEMA_V12_COOKIES,
)  # fmt: skip
SCHEMA_VERSION = len(MIGRATIONS)
