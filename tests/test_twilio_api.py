"""Failure classification of feedback posts, over real HTTP to FakeTwilio."""

from __future__ import annotations

import time

import pytest

from twilio_feedback import FeedbackError, Settings
from twilio_feedback.testing import Drop, FakeTwilio, Hang, Status
from twilio_feedback.twilio_api import TwilioAPI, classify


@pytest.fixture
def api(settings: Settings) -> TwilioAPI:
    return TwilioAPI(settings.replace(request_timeout=0.5))


@pytest.fixture
def sid(api: TwilioAPI) -> str:
    return str(api.send_message(to="+15558675310", from_="+15017122661", body="x").sid)


def _post(api: TwilioAPI, fake: FakeTwilio, sid: str) -> FeedbackError:
    with pytest.raises(FeedbackError) as info:
        api.post_feedback(fake.account_sid, sid)
    return info.value


def test_success_and_provide_feedback(api: TwilioAPI, fake_twilio: FakeTwilio, sid: str) -> None:
    assert fake_twilio.messages[0].provide_feedback
    api.post_feedback(fake_twilio.account_sid, sid)
    assert fake_twilio.feedback[0].outcome == "confirmed"


@pytest.mark.parametrize(
    ("fault", "retryable", "status", "code", "retry_after"),
    [
        (503, True, 503, 20503, None),
        (500, True, 500, 20500, None),
        (408, True, 408, 20408, None),
        (Status(429, retry_after=2), True, 429, 20429, 2.0),
        (Status(400, code=21610), False, 400, 21610, None),
        (403, True, 403, 20003, None),
        (401, True, 401, 20003, None),
    ],
)
def test_classification(
    api: TwilioAPI,
    fake_twilio: FakeTwilio,
    sid: str,
    fault: int | Status,
    retryable: bool,
    status: int,
    code: int,
    retry_after: float | None,
) -> None:
    fake_twilio.fail_next(fault)
    error = _post(api, fake_twilio, sid)
    assert (error.retryable, error.status, error.code, error.retry_after) == (
        retryable,
        status,
        code,
        retry_after,
    )


def test_unknown_message_is_permanent_with_code(api: TwilioAPI, fake_twilio: FakeTwilio) -> None:
    error = _post(api, fake_twilio, "SM" + "0" * 32)
    assert (error.retryable, error.status, error.code) == (False, 404, 20404)


def test_dropped_connection_is_retryable(api: TwilioAPI, fake_twilio: FakeTwilio, sid: str) -> None:
    fake_twilio.fail_next(Drop())
    error = _post(api, fake_twilio, sid)
    assert error.retryable
    assert error.status is None


@pytest.mark.timeout(30)
def test_hanging_twilio_times_out(api: TwilioAPI, fake_twilio: FakeTwilio, sid: str) -> None:
    fake_twilio.fail_next(Hang())
    started = time.monotonic()
    error = _post(api, fake_twilio, sid)
    assert error.retryable
    assert time.monotonic() - started < 3


def test_secrets_not_in_errors(settings: Settings, fake_twilio: FakeTwilio) -> None:
    bad = TwilioAPI(settings.replace(auth_token="wrong-token-value-wrong-token"))
    with pytest.raises(FeedbackError) as info:
        bad.post_feedback(fake_twilio.account_sid, "SM" + "0" * 32)
    assert info.value.status == 401
    assert info.value.credentials
    assert info.value.retryable
    assert "wrong-token-value" not in str(info.value) + repr(info.value)


def test_classify_unexpected() -> None:
    assert classify(RuntimeError("boom")).retryable


def test_edge_and_region_cannot_rewrite_a_custom_base_url(
    settings: Settings, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    api = TwilioAPI(settings)
    sid = str(api.send_message(to="+15558675310", from_="+15017122661", body="x").sid)
    api.post_feedback(fake_twilio.account_sid, sid)
    assert len(fake_twilio.feedback) == 1
