"""The worker's side of the pool, `serve`, on in-memory streams: one reply per request, in order,
and a failure becomes the caller's exception rather than the worker's end."""

import io
import mmap
import pickle

from scraper.parse.procworker import OOB, REPLY, REQUEST, serve


def _framed(*messages: object) -> io.BytesIO:
    stream = io.BytesIO()
    for message in messages:
        payload = pickle.dumps(message)
        stream.write(REQUEST.pack(len(payload), 0) + payload)
    stream.seek(0)
    return stream


def _replies(stream: io.BytesIO) -> list[tuple[bool, object]]:
    stream.seek(0)
    replies = []
    while header := stream.read(REPLY.size):
        (size,) = REPLY.unpack(header)
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


def test_out_of_band_buffers_come_from_the_ring() -> None:
    """A request's big bytes are not in its pickle: they are in the shared ring, at the offsets
    its header gives, and the call gets them as bytes."""
    ring = mmap.mmap(-1, 64)
    ring[10:15] = b"hello"
    ring[20:23] = b"abc"
    buffers: list[pickle.PickleBuffer] = []
    message = (len, [pickle.PickleBuffer(b"hello"), pickle.PickleBuffer(b"abc")])
    payload = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 2 and b"hello" not in payload
    requests = io.BytesIO(
        REQUEST.pack(len(payload), 2) + OOB.pack(10, 5) + OOB.pack(20, 3) + payload
        + REQUEST.pack(len(payload), 2) + OOB.pack(10, 5) + OOB.pack(20, 3) + payload
    )  # fmt: skip
    replies = io.BytesIO()
    serve(requests, replies, ring)
    assert _replies(replies) == [(True, 2), (True, 2)]
    unpacked = io.BytesIO()
    serve(io.BytesIO(REQUEST.pack(len(payload), 2) + OOB.pack(10, 5) + OOB.pack(20, 3) + payload),
          unpacked, None)  # fmt: skip
    ((ok, error),) = _replies(unpacked)  # a worker with no ring says so; it does not die
    assert not ok and "ring" in str(error)


class PanicException(BaseException):
    """What a Rust library's panic raises through pyo3: a BaseException, not an Exception."""


def _panics(_: None) -> object:
    raise PanicException("called `Option::unwrap()` on a `None` value")


def test_a_panic_costs_the_call_not_the_worker() -> None:
    replies = io.BytesIO()
    serve(_framed((_panics, None), (len, "abc")), replies)
    (ok, error), after = _replies(replies)
    assert not ok and "PanicException" in str(error) and "unwrap" in str(error)
    assert after == (True, 3)
