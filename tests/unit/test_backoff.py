"""A user's wait after a request the target could not take."""

from __future__ import annotations

from kvswarm.client import StreamResult
from kvswarm.locust.backoff import Backoff


def ended(failure: str = "", **headers: str) -> StreamResult:
    return StreamResult(failure=failure, headers=headers)


def test_connect_failures_wait_doubling_from_a_tenth_up_to_the_maximum() -> None:
    backoff = Backoff(max_s=0.5)
    waits = [backoff.after(ended("connect")) for _ in range(5)]
    assert waits == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_a_request_that_connects_resets_the_wait() -> None:
    backoff = Backoff(max_s=5)
    backoff.after(ended("connect"))
    backoff.after(ended("connect"))
    assert backoff.after(ended("disconnect")) == 0
    assert backoff.after(ended("connect")) == 0.1


def test_a_busy_answer_waits_what_retry_after_asks_capped_at_the_maximum() -> None:
    backoff = Backoff(max_s=2)
    assert backoff.after(ended("http_503", **{"retry-after": "1"})) == 1
    assert backoff.after(ended("http_429", **{"retry-after": "30"})) == 2
    assert backoff.after(ended("http_429")) == 0
    assert backoff.after(ended("http_503", **{"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})) == 0


def test_a_maximum_of_zero_never_waits() -> None:
    backoff = Backoff(max_s=0)
    assert backoff.after(ended("connect")) == 0
    assert backoff.after(ended("http_503", **{"retry-after": "1"})) == 0


def test_a_successful_request_never_waits() -> None:
    assert Backoff(max_s=5).after(ended()) == 0
