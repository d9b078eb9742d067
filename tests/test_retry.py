"""The retry policy, as pure functions: no threads, no store, no Twilio."""

from __future__ import annotations

import math
import random

import pytest

from twilio_feedback.errors import FeedbackError
from twilio_feedback.retry import (
    BACKOFF_CAP,
    BACKOFF_FLOOR,
    Fail,
    Retry,
    RetryPolicy,
    backoff,
)

ACCOUNT = "AC" + "1" * 32
NOW = 1_800_000_000.0
WINDOW = 24 * 3600.0


def error(
    status: int | None = 503,
    *,
    retryable: bool = True,
    retry_after: float | None = None,
    credentials: bool = False,
) -> FeedbackError:
    return FeedbackError(
        "x", retryable=retryable, status=status, retry_after=retry_after, credentials=credentials
    )


def decide(
    exc: FeedbackError, attempts: int = 1, *, window_end: float = NOW + WINDOW
) -> Retry | Fail:
    policy = RetryPolicy(WINDOW, rng=random.Random(7))
    return policy.decide(exc, attempts=attempts, account=ACCOUNT, now=NOW, window_end=window_end)


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 64, 10_000])
def test_backoff_stays_between_half_its_ceiling_and_the_cap(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(BACKOFF_CAP, 0.5 * 2 ** min(attempt, 64))
    for _ in range(200):
        delay = backoff(attempt, rng=rng)
        assert max(BACKOFF_FLOOR, ceiling / 2) <= delay <= max(BACKOFF_FLOOR, ceiling)


def test_a_permanent_refusal_fails_at_once() -> None:
    assert decide(error(404, retryable=False)) == Fail("refused")


@pytest.mark.parametrize("retry_after", [None, 0.0, math.nan])
def test_no_retry_comes_sooner_than_the_floor(retry_after: float | None) -> None:
    decision = decide(error(429, retry_after=retry_after))
    assert isinstance(decision, Retry)
    assert decision.delay >= BACKOFF_FLOOR


def test_retry_after_is_a_minimum_and_fixes_the_time() -> None:
    decision = decide(error(429, retry_after=30.0))
    assert decision == Retry(30.0, pull=False)  # Twilio said when: no recovery pulls it


def test_backoff_wins_over_a_shorter_retry_after() -> None:
    decision = decide(error(429, retry_after=1.0), attempts=20)
    assert isinstance(decision, Retry)
    assert decision.delay >= BACKOFF_CAP / 2


def test_a_huge_retry_after_is_cut_at_the_window_end() -> None:
    decision = decide(error(429, retry_after=1e9))
    assert decision == Retry(WINDOW, pull=False)


def test_nothing_is_retried_after_the_window() -> None:
    assert decide(error(), window_end=NOW + BACKOFF_FLOOR / 2) == Fail("retry window over")
    decision = decide(error(), attempts=30, window_end=NOW + 2.0)
    assert isinstance(decision, Retry)
    assert decision.delay <= 2.0  # the last attempt at the window's end


def test_rejected_credentials_wait_at_the_cap_and_a_success_on_the_account_pulls_them() -> None:
    decision = decide(error(401, credentials=True), attempts=1)
    assert isinstance(decision, Retry)
    assert BACKOFF_CAP / 2 <= decision.delay <= BACKOFF_CAP
    assert decision.pull == ACCOUNT


def test_backoff_after_an_outage_may_be_pulled_forward() -> None:
    decision = decide(error(503))
    assert isinstance(decision, Retry)
    assert decision.pull is True


def test_window_end_counts_from_the_confirmation() -> None:
    policy = RetryPolicy(100.0)
    assert policy.window_end(50.0, 10.0, NOW) == 150.0
    assert policy.window_end(None, 10.0, NOW) == 110.0
    assert policy.window_end(None, 0.0, NOW) == NOW + 100.0
