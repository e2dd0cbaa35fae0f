"""The timeline of a run on several workers, from lease samples and a server's log."""

from __future__ import annotations

import pytest

from bench.timeline import Sample, build


def test_requests_count_for_the_worker_that_held_their_host() -> None:
    samples = [
        Sample(100.0, {"h1": "pid-1", "h2": "pid-1"}),
        Sample(100.5, {"h1": "pid-1", "h2": "pid-1"}),
        Sample(101.5, {"h1": "pid-1", "h2": "pid-2"}),  # h2 moved to the second worker
    ]
    log = [
        ("h1", "/robots.txt", 100.0, 100.1),  # not a page: not counted
        ("h1", "/", 100.0, 100.2),
        ("h2", "/", 100.1, 100.6),  # in flight at the sample of 100.5
        ("h2", "/a", 101.6, 101.8),
        ("h1", "/a", 101.6, 102.1),  # in flight at no sample
    ]
    timeline = build(samples, log)
    assert timeline.workers == ["w1", "w2"]
    assert [s.done for s in timeline.seconds] == [2, 1, 1]
    assert [s.active_hosts for s in timeline.seconds] == [2, 2, 1]
    first = timeline.seconds[0].per_worker
    assert first["w1"] == (2, 2.0, 1.0)  # 2 done; 2 hosts held, 1 then 1 in flight
    assert timeline.seconds[1].per_worker["w2"] == (1, 1.0, 0.0)
    assert timeline.first_request == pytest.approx({"w1": 0.0, "w2": 1.6})
    assert "w2" in timeline.table()
