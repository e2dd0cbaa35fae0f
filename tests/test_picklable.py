"""pickled_as_arguments: the parse jobs and results cross to the workers and back unchanged."""

import dataclasses
import pickle
import re

import pytest

from scraper.models import Extraction, ExtractRule, ParseFailure, ParseJob, RuleSet
from scraper.parse.page import parse_page
from scraper.picklable import pickled_as_arguments
from scraper.urls import Scope, UrlPolicy

URL = "http://example.com/dir/page.html"


def test_what_crosses_to_the_workers_pickles_back_equal() -> None:
    rule = ExtractRule(name="price", css="p.price", take="attr", attr="data-x", regex=r"(\d+)")
    job = ParseJob(
        url=URL,
        body=b"<title>t</title><a href='/x'>x</a>",
        content_type="text/html",
        rules=Extraction(every=(rule,), sets=(RuleSet(urls=("*/dir/*",), rules=(rule,)),)),
        text="store",
        policy=UrlPolicy(query="sort", drop_params=("utm_*",)),
        scope=Scope(
            ("example.com",), include=(re.compile("/dir/"),), skip_extensions=frozenset({"pdf"})
        ),
    )
    result = parse_page(job)
    for value in (job, result, ParseFailure("boom")):
        assert pickle.loads(pickle.dumps(value, protocol=5)) == value
    assert result.links == ("http://example.com/x",) and result.follow == ()  # not under /dir/


def test_a_field_that_is_not_a_positional_argument_is_refused() -> None:
    for options in ({"kw_only": True}, {"init": False, "default": 0}):

        @dataclasses.dataclass(frozen=True)
        class Odd:
            a: int
            b: int = dataclasses.field(**options)  # type: ignore[call-overload]

        with pytest.raises(TypeError, match="positional __init__ argument"):
            pickled_as_arguments(Odd)


@pickled_as_arguments
@dataclasses.dataclass(frozen=True, slots=True)
class _Point:
    x: int
    y: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class _Named(_Point):
    pass


def test_a_subclass_comes_back_as_itself() -> None:
    for value in (_Point(1, 2), _Named(3, 4)):
        back = pickle.loads(pickle.dumps(value))
        assert back == value and type(back) is type(value)


def test_a_parse_job_s_body_can_travel_out_of_band() -> None:
    """At protocol 5 the body is a PickleBuffer: the parse pool takes it out of the pickle (to
    its shared memory) and hands it back as bytes; any other pickling keeps it inside."""
    job = ParseJob(url=URL, body=b"<p>big</p>" * 1000, content_type="text/html")
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(job, protocol=5, buffer_callback=buffers.append)
    assert len(payload) < 500 and [bytes(b.raw()) for b in buffers] == [job.body]
    again = pickle.loads(payload, buffers=[bytes(b.raw()) for b in buffers])
    assert again == job and type(again.body) is bytes
    for protocol in (2, 4, 5):
        assert pickle.loads(pickle.dumps(job, protocol=protocol)) == job
