"""The parser, called directly (it is a pure function) on awkward HTML."""

import pytest

from scraper.models import Extraction, ExtractRule, ParseFailure, ParseJob, ParseResult, RuleSet
from scraper.parse.page import _clean, parse_page, parse_pages

URL = "http://example.com/dir/page.html"


def parse(body: bytes | str, content_type: str | None = "text/html", **kw: object) -> ParseResult:
    data = body.encode() if isinstance(body, str) else body
    return parse_page(ParseJob(url=URL, body=data, content_type=content_type, **kw))  # type: ignore[arg-type]


def test_title_description_canonical_and_links() -> None:
    result = parse(
        """<html><head><title>  Hello
        World </title><meta name="Description" content=" About it ">
        <link rel="canonical" href="/canon"></head>
        <body><a href="a.html">a</a> <a href="/b#frag">b</a> <a href="a.html">again</a>
        <a href="mailto:x@example.com">m</a> <a href="javascript:void(0)">j</a>
        <a href="https://Other.example:443/x">o</a> <area href="../c" /></body></html>"""
    )
    assert result.title == "Hello World"
    assert result.description == "About it"
    assert result.canonical == "http://example.com/canon"
    assert result.links == (
        "http://example.com/dir/a.html",
        "http://example.com/b",
        "https://other.example/x",
        "http://example.com/c",
    )


def test_no_title_and_empty_body() -> None:
    empty = parse(b"")
    assert empty.title is None
    assert empty.links == ()
    assert empty.text_length == 0
    no_title = parse("<p>just text</p>")
    assert no_title.title is None
    assert no_title.text_length == len("just text")


def test_base_href_changes_how_links_resolve() -> None:
    result = parse('<head><base href="http://cdn.example.com/root/"></head><a href="x">x</a>')
    assert result.links == ("http://cdn.example.com/root/x",)


def test_relative_base_href_resolves_against_the_page() -> None:
    result = parse('<head><base href="/sub/"></head><a href="x">x</a>')
    assert result.links == ("http://example.com/sub/x",)


def test_entities_are_decoded() -> None:
    result = parse("<title>Fish &amp; Chips &eacute;t&#233; &lt;3</title>")
    assert result.title == "Fish & Chips été <3"


def test_charset_from_http_header() -> None:
    body = "<title>Caf\xe9 cr\xe8me</title>".encode("latin-1")
    result = parse(body, content_type="text/html; charset=ISO-8859-1")
    assert result.title == "Café crème"


def test_charset_from_meta_tag() -> None:
    body = '<meta charset="windows-1251"><title>Привет</title>'.encode("cp1251")
    result = parse(body, content_type="text/html")
    assert result.title == "Привет"


def test_bom_wins() -> None:
    body = "\ufeff<title>naïve</title>".encode("utf-16-le")
    result = parse(b"\xff\xfe" + body[2:], content_type="text/html; charset=iso-8859-1")
    assert result.title == "naïve"


def test_undeclared_charset_is_detected() -> None:
    sentence = "Ça a été très intéressant, déjà à côté du théâtre où les élèves étaient réunis. "
    text = "<title>Les élèves à côté</title><p>" + sentence * 20 + "</p>"
    result = parse(text.encode("latin-1"), content_type=None)
    assert result.title == "Les élèves à côté"


def test_utf8_pages_parse_from_their_bytes_as_from_their_text() -> None:
    """Lexbor reads valid UTF-8 (and ASCII) bodies as bytes, skipping a decode and a re-encode;
    every other body goes as text, decoded whole by the page's encoding. Both ways give the same
    page. The names are the encodings' Python names (None: chardet's guess, whatever it is)."""
    from selectolax.lexbor import LexborHTMLParser

    from scraper.parse.source import detect_encoding, first_reading, lexbor_source

    page = "<title>Café — 東京</title><p>naïve  text</p><a href='/ü'>x</a>"
    bodies = [
        (page.encode(), "text/html; charset=utf-8", "utf-8"),
        (b"\xef\xbb\xbf" + page.encode(), "text/html", "utf-8"),  # a BOM
        (page.encode() + b"<p>bad \xff\xfe byte</p>", "text/html; charset=utf-8", "utf-8"),
        (page.encode() + b"<p>\xc3\x00\x80 NUL</p>", "text/html; charset=utf-8", "utf-8"),
        (b"<title>plain</title>", "text/html; charset=utf-16", "utf-16-le"),  # ASCII as UTF-16
        (page.encode("utf-8")[:-3] + b"\xe2\x82", None, None),  # cut mid-character
        ("<title>Caf\xe9</title>".encode("latin-1"), "text/html; charset=iso-8859-1", "cp1252"),
        (b"<title>Ascii only</title>", "text/html; charset=windows-1252", "cp1252"),
        ('<meta charset="cp500"><title>x</title>'.encode("cp500"), None, None),
        ("<p>\ufffd is a character too</p>".encode(), None, "utf-8"),
        (b"<p>" + "é".encode() * 20_000 + b"</p>", None, "utf-8"),  # pieces cut between characters
    ]
    for body, content_type, expected in bodies:
        reading = first_reading(body, content_type, detect_encoding)
        html = reading.encoding.decode(reading.body)
        name, source = lexbor_source(body, content_type)
        assert name == (expected or reading.encoding.name), (body, content_type)
        assert isinstance(source, bytes) or source == html
        assert LexborHTMLParser(source).html == LexborHTMLParser(html).html, (body, content_type)
    assert isinstance(lexbor_source(*bodies[0][:2])[1], bytes)
    assert isinstance(lexbor_source(*bodies[2][:2])[1], str)  # invalid bytes: Python's reading
    result = parse(bodies[1][0])
    assert result.title == "Café — 東京"
    assert result.links == ("http://example.com/%C3%BC",)


def test_utf8_validity_is_decode_s_verdict() -> None:
    """is_utf8 checks a body piece by piece (16 KB, cut before a byte that starts a character);
    whatever the cuts, its answer is whether the whole decodes."""
    import random

    from scraper.parse.source import is_utf8

    rng = random.Random(15)
    pieces = [b"a", b" ", "é".encode(), "—".encode(), "😀".encode(), b"\x80", b"\xbf"]
    pieces += [
        b"\xc3",
        b"\xe2\x82",
        b"\xf0\x9f\x98",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\xff",
        b"\x00",
    ]
    for _ in range(300):
        around = [rng.choice(pieces) for _ in range(rng.randrange(0, 8))]
        lead = b"a" * (16_384 - rng.randrange(0, 6))  # something falls on the first cut
        tail = b"".join(rng.choice(pieces[:5]) for _ in range(rng.randrange(0, 5000)))
        data = lead + b"".join(around) + tail
        try:
            data.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        assert is_utf8(data) is valid, data[16_370:16_420]
    assert is_utf8(b"") and is_utf8("東".encode() * 10_000)
    assert not is_utf8(b"a" * 16_384 + b"\x80" * 6)  # continuation bytes past any character


def test_broken_markup_does_not_crash() -> None:
    result = parse("<html><title>T</title><p><a href='x'>one<a href=y>two</div></span><<<>>")
    assert result.title == "T"
    assert result.links == ("http://example.com/dir/x", "http://example.com/dir/y")


def test_a_link_that_breaks_the_url_parser_costs_only_itself() -> None:
    result = parse('<a href="http://[::1]@">odd</a><a href="/fine">fine</a>')
    assert result.links == ("http://example.com/fine",)


def test_binary_garbage_does_not_crash() -> None:
    result = parse(bytes(range(256)) * 10)
    assert result.title is None


def test_visible_text_excludes_scripts_and_styles() -> None:
    page = (
        "<style>.x{}</style><script>var secret=1</script><p> Seen  text </p>"
        "<noscript>n</noscript><template>t</template>"
    )
    result = parse(page, text="store")
    assert result.text == "Seen  text"  # each text node stripped; inside one, kept as it is
    assert result.text_length == len("Seen  text")
    same_text = parse("<div>Seen  text</div>")
    assert result.text_hash == same_text.text_hash
    assert same_text.text is None  # only kept with parse.text = "store"
    off = parse(page, text="off")
    assert (off.text, off.text_length, off.text_hash) == (None, None, None)
    assert off.links == result.links and off.title == result.title


def test_visible_text_is_the_stripped_text_nodes_joined_by_one_space() -> None:
    import xxhash

    result = parse(
        "<p>\n  One <b>two</b>\tthree </p>\n\n<ul>\n  <li>four\xa0</li>\n</ul><p>&nbsp;</p>"
        "<p>\u2003five</p>",
        text="store",
    )
    # "four\xa0" is stripped (str.strip: any Unicode space); the &nbsp; alone strips to nothing
    # but is not HTML whitespace, so it stays an empty part between two spaces.
    assert result.text == "One two three four  five"
    assert result.text_hash == xxhash.xxh3_128_hexdigest(result.text.encode())
    assert result.text_length == 24


def test_extraction_rules() -> None:
    rules = (
        ExtractRule(name="price", css="span.price"),
        ExtractRule(name="images", css="img", take="attr", attr="src", all=True),
        ExtractRule(name="box", css="div.box", take="html"),
        ExtractRule(name="missing", css="h6"),
        ExtractRule(name="tags", css="li.tag", all=True),
    )
    result = parse(
        '<span class="price"> 9.99 </span><img src="a.png"><img src="b.png"><img>'
        '<div class="box"><b>bold</b></div><li class="tag">x</li><li class="tag">y</li>',
        rules=Extraction(every=rules),
    )
    assert result.fields == {
        "price": "9.99",
        "images": ["a.png", "b.png"],
        "box": '<div class="box"><b>bold</b></div>',
        "missing": None,
        "tags": ["x", "y"],
    }


def test_rule_sets_apply_by_url_and_regexes_trim() -> None:
    html = """<h1>Widget</h1><p class="price">Price: £12.50 incl. VAT</p>
    <ul><li class="tag">#red</li><li class="tag">#big</li><li class="tag">plain</li></ul>"""
    rules = Extraction(
        every=(ExtractRule(name="name", css="h1"),),
        sets=(
            RuleSet(
                urls=("*/dir/*",),
                rules=(
                    ExtractRule(name="price", css="p.price", regex=r"£([\d.]+)"),
                    ExtractRule(name="tags", css="li.tag", all=True, regex=r"#\w+"),
                    ExtractRule(name="vat", css="p.price", regex=r"VAT (\d+)%"),
                ),
            ),
            RuleSet(urls=("*/elsewhere/*",), rules=(ExtractRule(name="never", css="h1"),)),
        ),
    )
    assert parse(html, rules=rules).fields == {
        "name": "Widget",
        "price": "12.50",  # the group
        "tags": ["#red", "#big"],  # the whole match; values that do not match are left out
        "vat": None,  # no match
    }
    other = parse_page(ParseJob(url="http://example.com/", body=html.encode(),
                                content_type="text/html", rules=rules))  # fmt: skip
    assert other.fields == {"name": "Widget"}


def test_whitespace_runs_collapse_to_one_space() -> None:
    assert _clean("  a  b\n\tc\r\n d\x0b\x0ce  ") == "a b c d e"
    assert _clean("é \xa0 b\xa0\xa0c — d") == "é b c — d"  # no-break spaces too
    assert _clean("a\u2003b") == "a\u2003b"  # rarer Unicode spaces are kept
    assert _clean("\n \n") == ""
    assert _clean("\ud800x y") == "\ud800x y"  # a lone surrogate does not raise


def test_collapsing_is_splitting_and_joining() -> None:
    import random

    rng = random.Random(6)
    alphabet = ["a", "é", "—", " ", "  ", "\t", "\n", "\r", "\x0b", "\x0c", "\xa0", "\u2003"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
        expected = b" ".join(text.replace("\xa0", " ").encode().split()).decode()
        assert _clean(text) == expected, repr(text)


def test_a_page_the_parser_fails_on_does_not_sink_its_batch() -> None:
    good = ParseJob(url="http://a.com/", body=b"<title>fine</title>", content_type="text/html")
    # An invalid regex would be refused by the config; here it stands for a parser bug.
    broken = ExtractRule(name="x", css="title", regex="(unclosed")
    bad = ParseJob(
        url="http://a.com/b", body=b"<title>t</title>", content_type="text/html",
        rules=Extraction(every=(broken,)),
    )  # fmt: skip
    first, failed, last = parse_pages([good, bad, good])
    assert isinstance(failed, ParseFailure) and failed.error.startswith("error: ")
    assert first == last and not isinstance(first, ParseFailure) and first.title == "fine"


def test_a_body_ending_in_a_cut_off_meta_keeps_its_links() -> None:
    """w3lib 2.6's prescan panicked on such a body, so each cost a worker and all its links.
    The standard's prescan gives up on a cut-off tag: such a page declares nothing."""
    tails = (b"<meta", b"<meta ", b'<meta charset="', b"<meta http-equiv=content-type content=")
    for tail in tails:
        result = parse(b'<title>cut</title><a href="/next">next</a>' + tail, content_type=None)
        assert result.title == "cut" and result.links == ("http://example.com/next",), tail


class PanicException(BaseException):
    """What a Rust library's panic raises through pyo3: a BaseException, not an Exception."""


def test_an_encoding_library_that_panics_costs_the_declared_encoding_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import scraper.parse.source

    def panic(_: bytes) -> str:
        raise PanicException("index out of bounds")

    monkeypatch.setattr(scraper.parse.source, "prescan", panic)
    result = parse('<title>naïve</title><a href="/x">x</a>', content_type="text/html")
    assert (result.encoding, result.title, result.links) == (
        "utf-8",
        "naïve",
        ("http://example.com/x",),
    )


def test_a_page_whose_parse_panics_is_a_failure_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import scraper.parse.page

    real = scraper.parse.page.parse_page

    def panics_on_the_second(job: ParseJob) -> ParseResult:
        if job.url.endswith("/2"):
            raise PanicException("boom")
        return real(job)

    monkeypatch.setattr(scraper.parse.page, "parse_page", panics_on_the_second)
    jobs = [ParseJob(url=f"http://example.com/{n}", body=b"<title>t</title>", content_type=None)
            for n in (1, 2, 3)]  # fmt: skip
    first, second, third = parse_pages(jobs)
    assert isinstance(first, ParseResult) and isinstance(third, ParseResult)
    assert isinstance(second, ParseFailure) and "PanicException: boom" in second.error


def test_a_field_regex_that_gives_up_is_null_and_named() -> None:
    rules = Extraction(
        every=(
            ExtractRule(name="slow", css="h1", regex="(a|aa)+$"),
            ExtractRule(name="fast", css="h1", regex="a{3}"),
            ExtractRule(name="many", css="p", all=True, regex="(a|aa)+$"),
        )
    )
    result = parse(
        "<h1>" + "a" * 60 + "b</h1><p>aaa</p><p>" + "a" * 60 + "b</p>",
        rules=rules,
        regex_timeout=0.02,
    )
    assert result.fields == {"slow": None, "fast": "aaa", "many": None}
    assert set(result.field_errors) == {"slow", "many"}
    assert result.field_errors["slow"].startswith("regex over its time (0.02 s)")


def test_field_regexes_that_finish_leave_no_field_errors() -> None:
    rules = Extraction(every=(ExtractRule(name="price", css="p", regex=r"[0-9.]+"),))
    result = parse("<p>$1<span>2.50</span></p>", rules=rules)  # as a browser shows it
    assert result.fields == {"price": "12.50"} and result.field_errors_json is None
