"""The worker's side of the pool, `serve`, on in-memory streams: one reply per request, in order,
and a failure becomes the caller's exception rather than the worker's end."""

import io
import pickle

from scraper.parse.procworker import HEADER, serve


def _framed(*messages: object) -> io.BytesIO:
    stream = io.BytesIO()
    for message in messages:
        payload = pickle.dumps(message)
        stream.write(HEADER.pack(len(payload)) + payload)
    stream.seek(0)
    return stream


def _replies(stream: io.BytesIO) -> list[tuple[bool, object]]:
    stream.seek(0)
    replies = []
    while header := stream.read(HEADER.size):
        (size,) = HEADER.unpack(header)
        replies.append(pickle.loads(stream.read(size)))
    return replies


def test_each_request_gets_its_reply_in_order() -> None:
    replies = io.BytesIO()
    serve(_framed((len, [1, 2, 3]), (sorted, "cba"), (int, "not a number"), (abs, -4)), replies)
    got = _replies(replies)
    assert got[0] == (True, 3) and got[1] == (True, ["a", "b", "c"]) and got[3] == (True, 4)
    ok, error = got[2]
    assert not ok and isinstance(error, ValueError)


def test_a_request_cut_short_ends_the_worker_quietly() -> None:
    whole = _framed((len, "abc")).getvalue()
    replies = io.BytesIO()
    serve(io.BytesIO(whole[:-2]), replies)  # the crawler died mid-write
    assert replies.getvalue() == b""


def test_a_reply_that_cannot_be_pickled_is_reported() -> None:
    replies = io.BytesIO()
    serve(_framed((_generator, None)), replies)  # a generator cannot be pickled
    ((ok, error),) = _replies(replies)
    assert not ok and "unpicklable reply" in str(error)


def _generator(_: None) -> object:
    return (n for n in range(3))
