import re

import pytest

from scraper.urls import (
    KEEP_QUERY,
    Scope,
    UrlPolicy,
    canonicalize,
    domain_entry,
    host_key,
    host_of,
    resolve_links,
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM/a", "http://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443/", "https://example.com/"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("http://example.com/a#frag", "http://example.com/a"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com/%7Euser/%41", "http://example.com/~user/A"),
        ("http://example.com/a%2fb", "http://example.com/a%2Fb"),
        ("http://example.com/a b", "http://example.com/a%20b"),
        ("http://example.com/x/./y/../z", "http://example.com/x/z"),
        ("http://example.com/p?", "http://example.com/p"),
        ("http://example.com/p?b=2&a=1", "http://example.com/p?b=2&a=1"),
        ("http://Bücher.example/ü", "http://xn--bcher-kva.example/%C3%BC"),
    ],
)
def test_canonical_forms(url: str, expected: str) -> None:
    assert canonicalize(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "mailto:someone@example.com",
        "javascript:void(0)",
        "data:text/html,hi",
        "tel:+1000",
        "file:///etc/passwd",
        "ftp://example.com/",
        "http://:80/",
        "http://[::1/",
    ],
)
def test_uncrawlable_urls_are_none(url: str) -> None:
    assert canonicalize(url) is None


def test_relative_links_resolve_against_the_base() -> None:
    base = "http://example.com/dir/page"
    assert canonicalize("other", base) == "http://example.com/dir/other"
    assert canonicalize("../up", base) == "http://example.com/up"
    assert canonicalize("/abs?q=1#x", base) == "http://example.com/abs?q=1"
    assert canonicalize("//cdn.example.com/x", base) == "http://cdn.example.com/x"
    assert canonicalize("  spaced  ", base) == "http://example.com/dir/spaced"


def test_scope_allows_subdomains_and_limits_depth() -> None:
    scope = Scope(["example.com"], max_depth=2)
    assert scope.allows("http://example.com/", 0)
    assert scope.allows("http://www.example.com/", 2)
    assert not scope.allows("http://example.com/", 3)
    assert not scope.allows("http://notexample.com/", 0)
    assert not scope.allows("http://example.com.evil.org/", 0)
    assert Scope(["example.com"], max_depth=0).allows("http://example.com/", 99)


def test_resolved_links_follow_what_allows_allows() -> None:
    import re

    scope = Scope(
        ("example.com",),
        denied_domains=("ads.example.com",),
        exclude=(re.compile("/private/"),),
        skip_extensions=frozenset({"pdf"}),
    )
    hrefs = ["http://example.com/a", "http://ads.example.com/b", "http://other.org/c",
             "http://www.example.com/doc.pdf", "/private/x", "mailto:x@example.com",
             "http://www.example.com/d", "http://EXAMPLE.com:81/e", "/a#again"]  # fmt: skip
    for _ in range(2):  # the second time from what was remembered
        links, follow, cut = resolve_links(hrefs, "http://example.com/p", scope=scope)
        assert cut == 0
        assert links == ("http://example.com/a", "http://ads.example.com/b", "http://other.org/c",
                         "http://www.example.com/doc.pdf", "http://example.com/private/x",
                         "http://www.example.com/d", "http://example.com:81/e")  # fmt: skip
        assert follow == tuple(url for url in links if scope.allows(url))
        assert follow == ("http://example.com/a", "http://www.example.com/d",
                          "http://example.com:81/e")  # fmt: skip
    assert resolve_links(hrefs[:3], "http://example.com/p") == (*(tuple(hrefs[:3]),) * 2, 0)


def test_the_link_memo_stays_bounded() -> None:
    from scraper.urls import _LinkMemo

    memo = _LinkMemo(limit=4)  # tables count as answers do
    by_origin, by_folder = memo.tables("http://a.com/d/p", KEEP_QUERY, None)  # 2
    memo.remember(by_folder, "x0", ("http://a.com/d/x0", True))  # 3
    assert memo.tables("http://a.com/d/q", KEEP_QUERY, None) == (by_origin, by_folder)
    memo.remember(by_folder, "x1", ("http://a.com/d/x1", True))  # 4: the limit
    memo.remember(by_origin, "/y", ("http://a.com/y", True))  # all is forgotten first
    assert by_folder == {} and by_origin == {"/y": ("http://a.com/y", True)}
    assert memo.tables("http://a.com/d/p", KEEP_QUERY, None) == ({}, {})
    for n in range(100):  # a folder per page, every link found in the origin's table
        memo.tables(f"http://a.com/product/{n}/", KEEP_QUERY, None)
    assert len(memo._tables) <= 4


@pytest.fixture
def fresh_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """A memo of resolve_links's own for the test, so what it remembers does not depend on the
    tests that ran before it."""
    import scraper.urls

    monkeypatch.setattr(scraper.urls, "_MEMO", scraper.urls._LinkMemo(limit=50_000))


@pytest.mark.usefixtures("fresh_memo")
def test_remembered_links_agree_with_canonicalize_whatever_page_came_first() -> None:
    """Pages that share an origin or a folder share answers; hrefs whose answer depends on
    more of the base (its last segment or query) must not, nor those urljoin reads its own
    way (whitespace, tabs, "//" with no host, "http:" with no "//"). Each order of the bases,
    against canonicalize + Scope.allows for each href."""
    import itertools

    bases = ["http://h.com/d/a?x=1", "http://h.com/d/b", "http://h.com/d/b;p",
             "http://h.com/a//b", "http://h.com/c", "http://h.com/z/b", "http://h.com/a?x=1",
             "https://h.com/d/a"]  # fmt: skip
    hrefs = ["//", "//?q", "//#f", "//h.com", "http:", "HTTP:?q", "http:x", "https:", "/\t/",
             "/\n/?q", "/x;", "/x;?q", "/a;b/c", "page.html #top", "page.html ", "/x #a",
             "/x ", "?q #a", "x\xa0#a", "\x00\n#", "x #", "x ", "x\t#f", " x#f", "x\x85",
             "x\xa0", "mailto:x", "MAILTO:x", "a b:c", "a+b:c", "1a:x", "x#a b", "x#", "#", "?",
             ";", "", "x?y#z", "../x#y", "./", "javascript:void(0)", "/x", "x", "http://h.com/x",
             "HTTP://h.com/x", "\\x", "\\\\h.com\\x", "http:\\\\h.com", "https:x", "https:?q",
             "http:/x", "x\x00", "\x00x", "%2e%2e/x", "\u200bx", "x\u3000"]  # fmt: skip
    scope = Scope(("h.com",), exclude=(re.compile("/d/"),))
    for order in itertools.permutations(bases, 3):
        for base in order:
            for policy, within in ((KEEP_QUERY, None), (UrlPolicy(query="drop"), scope)):
                links = {}
                for href in hrefs:
                    url = canonicalize(href, base, policy)
                    if url is not None:
                        links[url] = within is None or within.allows(url)
                expected = (tuple(links), tuple(u for u, ok in links.items() if ok), 0)
                assert resolve_links(hrefs, base, policy, within) == expected, (order, base)


@pytest.mark.parametrize(
    ("url", "key", "host"),
    [
        ("http://example.com/a", "example.com", "example.com"),
        ("http://example.com:8080/a?b=c:d", "example.com:8080", "example.com"),
        ("https://user:pw@example.com:8443/", "example.com:8443", "example.com"),
        ("http://[::1]:8080/x", "[::1]:8080", "::1"),
        ("http://xn--bcher-kva.example/", "xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_host_of_canonical_urls(url: str, key: str, host: str) -> None:
    canonical = canonicalize(url)
    assert canonical is not None
    assert (host_key(canonical), host_of(canonical)) == (key, host)


def test_canonical_urls_are_their_own_canonical_form() -> None:
    """A canonical URL canonicalises to itself, whatever the policy: page URLs are the bases
    links resolve against and the frontier's keys, so a second pass must change nothing."""
    import itertools

    hosts = [
        "a.com",
        "a-b.c0m",
        "x.a.com",
        "1.2.3.4",
        "a.com:8080",
        "a.com:80",
        "a.com:080",
        "a.com:99999",
        "a.com:%38%30",
        "%61.com",
        "127.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "127.0.0.1",
        "1.2.3.4.5",
        "a.0x7f",
        "a.com.",
        "user:pw@a.com",
        "a_b.com",
        "A.com",
        "a..com",
        "-a.com",
        "xn--bcher-kva.example",
    ]
    paths = [
        "/",
        "/x",
        "/a//b",
        "/a/./b",
        "/.",
        "/x/..",
        "/x/../y",
        "/..x",
        "/x.",
        "/%41",
        "/a b",
        "/ü",
        "/x;p=1",
        "/~u/(1)*!",
        "/a:b@c",
        "/x'y",
        "/%41%7e%7E%2d",
        "/%2f",
        "/%2F",
        "/%20",
        "/%zz",
        "/%",
        "/%2E%2E/x",
        "/a%2Eb",
        "/%C3%BC",
        "/%3A%40%21",
        "/%25",
    ]
    queries = [
        "",
        "?",
        "?a",
        "?a=",
        "?=b",
        "?a&b",
        "?a=1&&b=2",
        "?a=b=c",
        "?q=%20",
        "?q=a b",
        "?utm_source=x&a=1",
        "?x=/y?z",
        "?k=é",
        "#f",
        "?#f",
        "?a#f",
        "?a=1#f?g",
        "?q=why?",
        "??",
        "?a?",
    ]
    policies = [KEEP_QUERY, UrlPolicy(drop_params=("utm_*",)), UrlPolicy(query="sort")]
    for scheme, host, path, query in itertools.product(
        ["http", "https", "HTTP"], hosts, paths, queries
    ):
        url = f"{scheme}://{host}{path}{query}"
        for policy in policies:
            canonical = canonicalize(url, policy=policy)
            if canonical is not None:
                assert canonicalize(canonical, policy=policy) == canonical, url
                assert canonicalize(canonical, canonical, policy) == canonical, url


@pytest.mark.usefixtures("fresh_memo")
def test_resolve_links_agrees_with_canonicalize() -> None:
    """Each href on its own, remembered or not, as canonicalize resolves it; bases of one folder
    share answers, and the second and third spelling come from the memo."""
    bases = ["http://a.com/d/p", "http://a.com", "https://a.com:8443/d/?q=1#f", "http://a.com/d/",
             "http://a.com/d/p?x=/y/z", "http://u@a.com:81/d/e/f#g/h", "http://a.com?q", "http://a.com#f",
             "mailto:x@a.com", "http://a.com/a/b/c/d", "http://a.com/a/b/c/", "http://a.com/a//b/c",
             "http://a.com/a/b?x=/../../y"]  # fmt: skip
    hrefs = ["/x", "/x/../y", "/./x?a=1#f", "//b.com/x", "x", "../x", "?q", "#f", "/\\evil",
             "http://B.com/x", "https://b.com", "HTTP://b.com/x", "/ü/a b", "/%7e", "",
             "./x?", "../../../x", "x/../../y", "./", ".", "..", "x/", "x?q=/a#f", "%41", "ü",
             "a b", "a\tb", "a\\b", "a:b", "x/a:b", "./a:b", "mailto:x@b.com", "x#", "x?#f",
             "javascript:void(0)", "x//y", ";p", "~u/(1)", "%32%36", "/%32?q=%41", "a/.b", "a/..b",
             "./a/../b/./c", "/a/./b", "x/.", "x;", ";", "a;b/c", "/faq?q=why?", "/a??",
             "x?y?", "../../../../x", "./../x", ".././x", "../x/../y", "./x?q=../", "../",
             "../..", "..//x", ".//x", "./.", "../a:b", "./x#../y", "../x?", "./%41", "../;x",
             "./?q", "./#f", "../?q=1", "/x;", "/x;?q", "/a;b/c", "//", "//?q", "http:",
             "http:x", "HTTP:?q", "/\t/", "/\n/?q", "x #f", "\\x", "\\\\h.com\\x",
             "http:\\\\h.com\\", "https:b.com/", "http:/x", "%2e%2E/x", "x/%2e/y"]  # fmt: skip
    for base in bases:
        for href in hrefs:
            expected = canonicalize(href, base)
            links = (expected,) if expected else ()
            for spelled in (href, f" {href}", href):
                assert resolve_links([spelled], base) == (links, links, 0), (base, spelled)


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        # A backslash is a slash in an http(s) URL.
        ("\\x", "http://h.com/x"),
        ("http:\\\\other.com\\x", "http://other.com/x"),
        ("\\\\other.com\\x\\y", "http://other.com/x/y"),
        # Another special scheme's "scheme:x" is that site; the page's own is a relative path.
        ("https:example.com/", "https://example.com/"),
        ("http:x", "http://h.com/d/x"),
        # IDNA mapping drops invisible characters (a soft hyphen, a zero-width space).
        ("http://exa\u00admple.com/", "http://example.com/"),
        ("http://ex\u200bample.com/", "http://example.com/"),
        ("http://%41.com/", "http://a.com/"),
        # Percent-encoding as a browser sends it: "|" as it is, "^" and "{" escaped.
        ("/a|b^c{d}", "http://h.com/a|b%5Ec%7Bd%7D"),
        ("/x?q=a b&c|d^", "http://h.com/x?q=a%20b&c|d^"),
        # No URL to a browser: no link.
        ("http://[::1.2.]/", None),
        ("http://[::1]x/", None),
        ("http://[1:2:3:4:5:6:7:8:9]/", None),
        ("http://a b.com/", None),
    ],
)
def test_links_resolve_as_a_browser_resolves_them(href: str, expected: str | None) -> None:
    assert canonicalize(href, "http://h.com/d/p?x=1") == expected


def test_dropped_parameters_are_the_only_change_to_a_query() -> None:
    """crawl.drop_params removes the parameters it names; every other one keeps its bytes
    (before, the query was rebuilt: "?b" became "?b=", "? d" became "?+d+=")."""
    drop = UrlPolicy(drop_params=("utm_*", "fbclid"))
    base = "http://h.com/"
    assert canonicalize("/p?b", base, drop) == "http://h.com/p?b"
    assert canonicalize("/p? d", base, drop) == "http://h.com/p?%20d"
    assert canonicalize("/p?a=1&&b=%7e+x&c=d=e", base, drop) == "http://h.com/p?a=1&&b=%7e+x&c=d=e"
    assert (
        canonicalize("/p?utm_source=m&b&fbclid=1&x=/y?z", base, drop) == "http://h.com/p?b&x=/y?z"
    )
    assert canonicalize("/p?utm%5Fsource=m&utm+x=1&b", base, drop) == "http://h.com/p?utm+x=1&b"
    assert canonicalize("/p?utm_a=1&fbclid", base, drop) == "http://h.com/p"
    assert canonicalize("/p?UTM_a=1", base, drop) == "http://h.com/p?UTM_a=1"  # case matters
    sort = UrlPolicy(query="sort", drop_params=("utm_*",))
    assert canonicalize("/p?b=2&&a&utm_x=1&a=%31", base, sort) == "http://h.com/p?a&a=%31&b=2"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Numbers in every spelling the resolver (inet_aton) and browsers (WHATWG) accept.
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://127.1/x", "http://127.0.0.1/x"),
        ("http://0x7f.1:8080/", "http://127.0.0.1:8080/"),
        ("http://0177.0.0.1/", "http://127.0.0.1/"),
        ("http://0x7F000001/", "http://127.0.0.1/"),
        ("http://169.254.43518/", "http://169.254.169.254/"),
        ("http://0/", "http://0.0.0.0/"),
        ("http://10.0.0.1/", "http://10.0.0.1/"),
        # A name ending in a dot is that name; credentials are dropped.
        ("http://Example.COM./a", "http://example.com/a"),
        ("http://user:secret@example.com/a", "http://example.com/a"),
        ("https://user@example.com:8443/", "https://example.com:8443/"),
        ("http://:secret@example.com/", "http://example.com/"),
        ("http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/"),
        ("http://a_b.example.com/", "http://a_b.example.com/"),
    ],
)
def test_hosts_as_the_resolver_will_see_them(url: str, expected: str) -> None:
    assert canonicalize(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://a\x1bb.com/", "http://a\x1b]0;title\x07.com/", "http://a<b>.com/",
        'http://a"b.com/', "http://a b.com/", "http://a\x00.com/", "http://a\x7f.com/",
        "http://a|b.com/", "http://a..com/", "http://1.2.3.4.5/",
        "http://256.0.0.1/", "http://1.16777216/", "http://08.0.0.1/", "http://example.0x7f/",
        "http://a.b.c.123/", "http://a\u202eb.com/",
    ],
)  # fmt: skip
def test_hosts_that_are_no_host_names_are_refused(url: str) -> None:
    assert canonicalize(url) is None
    assert canonicalize("/x", url) is None  # as a base too (a page's own URL never is one)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("Example.COM", "example.com"),
        (".example.com", "example.com"),
        ("example.com:8080", "example.com:8080"),
        ("example.com:80", "example.com:80"),
        ("Bücher.example:443", "xn--bcher-kva.example:443"),
        ("127.1", "127.0.0.1"),
        ("2130706433:8080", "127.0.0.1:8080"),
        ("::1", "[::1]"),
        ("[::1]:8080", "[::1]:8080"),
        ("http://example.com/", None),
        ("example.com:99999", None),
        ("example.com:x", None),
        ("user@example.com", None),
        ("a b", None),
        ("a\x1bb", None),
    ],
)
def test_domain_entries(entry: str, expected: str | None) -> None:
    assert domain_entry(entry) == expected


def test_domains_with_a_port_admit_that_port_only() -> None:
    scope = Scope(("example.com:8080", "127.0.0.1:8000", "[::1]:81", "plain.org"))
    assert scope.outside("http://example.com:8080/") is None
    assert scope.outside("http://www.example.com:8080/x") is None
    assert scope.outside("http://example.com/") == "example.com is not in crawl.allowed_domains"
    assert scope.outside("https://example.com:8080/") is None  # the port, whatever the scheme
    assert scope.outside("http://127.0.0.1:8000/") is None
    assert scope.outside("http://127.0.0.1:8001/") is not None
    assert scope.outside("http://[::1]:81/") is None
    assert scope.outside("http://[::1]/") is not None
    assert scope.outside("http://plain.org:1234/") is None
    assert scope.outside("http://0.0.1:8000/") is not None  # no parent domains of an address
    default_port = Scope(("example.com:443",))
    assert default_port.outside("https://example.com/") is None
    assert default_port.outside("http://example.com/") is not None
    denied = Scope(("example.com",), denied_domains=("example.com:8080",))
    assert denied.outside("http://example.com/") is None
    assert denied.outside("http://a.example.com:8080/") == (
        "a.example.com:8080 is in crawl.denied_domains"
    )


def test_long_urls_are_not_followed() -> None:
    scope = Scope(("example.com",), max_url_length=40)
    assert scope.allows("http://example.com/" + "a" * 21)
    assert not scope.allows("http://example.com/" + "a" * 22)


def test_links_past_the_limits_are_cut_and_counted() -> None:
    scope = Scope(("example.com",), max_links=3, max_url_length=30)
    hrefs = ["/a", "/a", "/" + "x" * 20, "http://other.org/b", "/c", "/d", "/e", "mailto:x@y"]
    links, follow, cut = resolve_links(hrefs, "http://example.com/", scope=scope)
    assert links == ("http://example.com/a", "http://other.org/b", "http://example.com/c")
    assert follow == ("http://example.com/a", "http://example.com/c")
    assert cut == 3  # the long one, /d and /e (repeats and uncrawlable links are no links)
