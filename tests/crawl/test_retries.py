"""Retries: which attempts follow which failures, after which pauses (a recorded sleep, no real
waiting), and what the result keeps of the throttling."""

from __future__ import annotations

import email.utils
import time

import pytest

from scraper.crawl.retries import Retryable, RetryPolicy, parse_retry_after, with_retries
from scraper.models import CrawlRequest, ErrorKind, FetchResult

REQUEST = CrawlRequest("http://127.0.0.1/")


def result(attempt: int, status: int | None = 200, kind: ErrorKind | None = None) -> FetchResult:
    return FetchResult(
        request=REQUEST, fetched_at="now", attempts=attempt, status=status, error_kind=kind
    )


class Script:
    """Attempts that fail as scripted (status, Retry-After), then succeed; the pauses slept."""

    def __init__(self, *failures: tuple[int | None, float | None]) -> None:
        self.failures = list(failures)
        self.numbers: list[int] = []
        self.pauses: list[float] = []

    async def attempt(self, number: int) -> FetchResult:
        self.numbers.append(number)
        if len(self.numbers) <= len(self.failures):
            status, retry_after = self.failures[len(self.numbers) - 1]
            kind = ErrorKind.HTTP if status else ErrorKind.TIMEOUT
            raise Retryable(result(number, status, kind), retry_after)
        return result(number)

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)


POLICY = RetryPolicy(retries=2, backoff=0.5, backoff_max=1.5, max_retry_after=60.0)


async def test_a_success_needs_one_attempt_and_no_pause() -> None:
    script = Script()
    done = await with_retries(script.attempt, POLICY, sleep=script.sleep)
    assert (done.attempts, done.throttled, script.pauses) == (1, False, [])


async def test_failures_are_retried_with_backoff_then_the_success_is_the_result() -> None:
    script = Script((500, None), (None, None))
    done = await with_retries(script.attempt, POLICY, sleep=script.sleep)
    assert (done.attempts, done.status, done.error_kind) == (3, 200, None)
    assert script.numbers == [1, 2, 3]
    first, second = script.pauses
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 1.5  # 0.5 then 1.0, each plus up to 0.5
    assert not done.throttled  # a 500 is no throttle


async def test_when_every_attempt_fails_the_last_failure_is_the_result() -> None:
    script = Script((503, None), (502, None), (500, None))
    done = await with_retries(script.attempt, POLICY, sleep=script.sleep)
    assert (done.attempts, done.status, done.error_kind) == (3, 500, ErrorKind.HTTP)
    assert len(script.pauses) == 2  # none after the last
    assert (done.throttled, done.retry_after) == (True, None)  # a 503, without Retry-After


async def test_retry_after_is_the_pause_capped_and_the_longest_is_kept() -> None:
    script = Script((429, 3.0), (503, 600.0))
    policy = RetryPolicy(retries=2, backoff=0.5, backoff_max=1.5, max_retry_after=10.0)
    done = await with_retries(script.attempt, policy, sleep=script.sleep)
    assert script.pauses == [3.0, 10.0]
    assert (done.attempts, done.throttled, done.retry_after) == (3, True, 600.0)


async def test_the_hosts_politeness_is_waited_for_when_longer() -> None:
    script = Script((None, None), (429, 0.2))
    await with_retries(script.attempt, POLICY, not_before=lambda: 4.0, sleep=script.sleep)
    assert script.pauses == [4.0, 4.0]


async def test_no_retries_means_one_attempt() -> None:
    script = Script((None, None))
    done = await with_retries(script.attempt, RetryPolicy(retries=0), sleep=script.sleep)
    assert (done.attempts, done.error_kind, script.pauses) == (1, ErrorKind.TIMEOUT, [])


async def test_an_answer_that_is_not_retryable_is_the_result_at_once() -> None:
    async def not_found(number: int) -> FetchResult:
        return result(number, 404, ErrorKind.HTTP)

    done = await with_retries(not_found, POLICY)
    assert (done.attempts, done.status) == (1, 404)


def test_the_backoff_doubles_up_to_its_cap_plus_jitter() -> None:
    policy = RetryPolicy(backoff=0.5, backoff_max=30.0)
    for failed, base in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (10_000, 30.0)]:
        pauses = [policy.pause(failed, None) for _ in range(200)]
        assert all(base <= p <= base + 0.5 for p in pauses), failed
        assert max(pauses) - min(pauses) > 0.1  # jitter: not all alike
    assert policy.pause(1, 0.0) == 0.0  # "Retry-After: 0" means at once


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), (" 7 ", 7.0), (None, None), ("", None), ("soon", None), ("-5", None)],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    later = email.utils.formatdate(time.time() + 100, usegmt=True)
    assert 95 <= (parse_retry_after(later) or 0) <= 100
    earlier = email.utils.formatdate(time.time() - 100, usegmt=True)
    assert parse_retry_after(earlier) == 0.0
