"""Our URLs against the web-platform-tests URL data (tests/urltestdata.json; tests/urltestdata.md
names its source and commit): every entry through the parser alone (what a browser gives), and
through `canonicalize`, whose answer is the browser's with our deliberate changes, each named
below with its reason. The expected canonical URL is built from the entry's own parts (scheme,
host, port, path, query), not from our code."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import ada_url
import pytest

from scraper.urls import canonicalize

ENTRIES: list[dict[str, Any]] = [
    entry
    for entry in json.loads((Path(__file__).parent / "urltestdata.json").read_text("utf-8"))
    if isinstance(entry, dict)  # the rest are comments
]

# Where we differ from a browser on purpose.
SCHEME = "not http(s): the crawler requests nothing else, so such a link is no link"
HOST = (
    "a host that is no DNS name (a character other than letters, digits, '-' and '_', or an "
    "empty label): no resolver looks it up, and such a host (an escape sequence, say) never "
    "reaches the frontier, a log or a terminal"
)
FRAGMENT = "the fragment is dropped: it is never sent, and /p#a and /p#b are one page"
CREDENTIALS = "a user name and password are dropped: never sent, stored or shown"
TRAILING_DOT = "a trailing dot is dropped: example.com. is the example.com the deny rules name"
EMPTY_QUERY = "an empty query is none: /p? is /p to a server, and one page to us"
ESCAPES = (
    "path escapes: unreserved characters decoded (%7E is ~), the others' hex upper case "
    "(RFC 3986 6.2.2: the same resource to a server, one spelling to us)"
)

# Where ada-url (4.0.0) and this data disagree: (input, base) -> why.
CARET = (
    "'^' in a path: the data predates whatwg/url#846 (2025), which added '^' to the path "
    "percent-encode set (as Chrome and Firefox do); ada follows the standard"
)
A_LABEL = (
    "an xn-- label whose decoding is not a valid label (circled numbers, which UTS 46 maps): a "
    "failure by the standard, a host to ada; for us a link a browser would drop, whose host "
    "then fails to resolve"
)
LIBRARY: dict[tuple[str, str | None], str] = {
    ("foo://host/ !\"$%&'()*+,-./:;<=>@[\\]^_`{|}~", "about:blank"): CARET,
    ("wss://host/ !\"$%&'()*+,-./:;<=>@[\\]^_`{|}~", "about:blank"): CARET,
    **{
        (f"http://{label}", "about:blank"): A_LABEL
        for label in (
            "a.b.c.xn--pokxncvks",
            "10.0.0.xn--pokxncvks",
            "a.b.c.XN--pokxncvks",
            "a.b.c.Xn--pokxncvks",
            "10.0.0.XN--pokxncvks",
            "10.0.0.xN--pokxncvks",
        )
    },
}


def entry_id(entry: dict[str, Any]) -> str:
    return ascii(f"{entry['input']} @ {entry['base']}")[1:-1][:80]


def browser(entry: dict[str, Any]) -> str | None:
    return None if entry.get("failure") else str(entry["href"])


def serialised(entry: dict[str, Any]) -> str | None:
    """What ada-url gives for the entry, before any change of ours."""
    try:
        if entry["base"] is None:
            return ada_url.normalize_url(entry["input"])
        return ada_url.join_url(entry["base"], entry["input"])
    except ValueError:
        return None


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_the_parser_reads_it_as_a_browser(entry: dict[str, Any]) -> None:
    if (entry["input"], entry["base"]) in LIBRARY:
        assert serialised(entry) != browser(entry)  # a newer ada agrees: drop it from the list
    elif "\ud800" in entry["input"]:
        pass  # UTF-8 cannot carry a lone surrogate: canonicalize replaces it (below)
    else:
        assert serialised(entry) == browser(entry)


_DNS_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?")
_ESCAPE = re.compile("%([0-9A-Fa-f]{2})")
_UNRESERVED = re.compile("[A-Za-z0-9._~-]")


def _path_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if _UNRESERVED.fullmatch(char) else match.group(0).upper()


def ours(entry: dict[str, Any]) -> tuple[str | None, list[str]]:
    """What canonicalize must give for the entry, and the reasons it differs from the browser's
    (none when it does not)."""
    if entry.get("failure"):
        return None, []
    if entry["protocol"] not in ("http:", "https:"):
        return None, [SCHEME]
    hostname: str = entry["hostname"]
    if not hostname.startswith("[") and not _DNS_NAME.fullmatch(hostname):
        return None, [HOST]
    reasons = []
    if entry["hash"] or entry["href"].endswith("#"):
        reasons.append(FRAGMENT)
    if entry["username"] or entry["password"]:
        reasons.append(CREDENTIALS)
    if hostname.endswith("."):
        reasons.append(TRAILING_DOT)
        hostname = hostname[:-1]
    search: str = entry["search"]
    if not search and "?" in entry["href"].partition("#")[0]:
        reasons.append(EMPTY_QUERY)
    path = _ESCAPE.sub(_path_escape, entry["pathname"])
    if path != entry["pathname"]:
        reasons.append(ESCAPES)
    port = f":{entry['port']}" if entry["port"] else ""
    return f"{entry['protocol']}//{hostname}{port}{path}{search}", reasons


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_id)
def test_canonical_urls_are_the_browsers_but_for_our_changes(entry: dict[str, Any]) -> None:
    expected, _ = ours(entry)
    got = canonicalize(entry["input"], entry["base"])
    if LIBRARY.get((entry["input"], entry["base"])) == A_LABEL:
        assert expected is None and got is not None
    else:
        assert got == expected


def test_the_tally() -> None:
    """How many entries we answer as a browser does, and how many differ for each reason: a
    change in these numbers is a change in what the crawler fetches."""
    assert len(ENTRIES) == 601
    tally: Counter[str] = Counter()
    for entry in ENTRIES:
        if (entry["input"], entry["base"]) in LIBRARY:
            tally[LIBRARY[entry["input"], entry["base"]]] += 1
            continue
        _, reasons = ours(entry)
        tally.update(reasons or ["no URL to either" if entry.get("failure") else "the same URL"])
    assert dict(tally) == {
        "the same URL": 150,
        "no URL to either": 220,
        SCHEME: 161,
        FRAGMENT: 25,
        CREDENTIALS: 25,
        ESCAPES: 8,
        HOST: 4,
        EMPTY_QUERY: 2,
        CARET: 2,
        A_LABEL: 6,
    }  # 370 entries alike, 223 apart on purpose (2 for two reasons), 8 ada's
