"""The emulator against the official twilio client and plain HTTP, faults included."""

from __future__ import annotations

import time

import httpx
import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from twilio_feedback.testing import Delay, Drop, FakeTwilio, Hang, Status

PHONE, SENDER = "+15558675310", "+15017122661"


def _feedback(fake: FakeTwilio, sid: str, account: str | None = None) -> None:
    client = fake.client()
    client.api.v2010.accounts(account or fake.account_sid).messages(sid).feedback.create(
        outcome="confirmed"
    )


def _feedback_url(fake: FakeTwilio, sid: str) -> str:
    return f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages/{sid}/Feedback.json"


def test_create_message_and_feedback_with_official_client(fake_twilio: FakeTwilio) -> None:
    client = fake_twilio.client()
    message = client.messages.create(to=PHONE, from_=SENDER, body="hi", provide_feedback=True)
    assert message.sid.startswith("SM")
    assert len(message.sid) == 34
    assert message.status == "queued"
    [stored] = fake_twilio.messages
    assert stored.provide_feedback is True
    assert stored.params["ProvideFeedback"] == "true"
    _feedback(fake_twilio, message.sid)
    [post] = fake_twilio.feedback
    assert (post.message_sid, post.outcome) == (message.sid, "confirmed")
    assert fake_twilio.requests[-1].status == 200
    assert "authorization" not in fake_twilio.requests[-1].headers


def test_feedback_status_is_configurable_and_any_2xx_parses() -> None:
    with FakeTwilio(feedback_status=201) as fake:
        sid = fake.client().messages.create(to=PHONE, from_=SENDER, body="x").sid
        _feedback(fake, sid)
        assert fake.requests[-1].status == 201


def test_error_bodies_follow_twilio(fake_twilio: FakeTwilio) -> None:
    url = f"{fake_twilio.base_url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    auth = (fake_twilio.account_sid, fake_twilio.auth_token)
    response = httpx.post(url, data={"From": SENDER, "Body": "x"}, auth=auth)
    assert response.status_code == 400
    assert response.json() == {
        "code": 21604,
        "message": "A 'To' phone number is required.",
        "more_info": "https://www.twilio.com/docs/errors/21604",
        "status": 400,
    }
    assert httpx.post(url, data={"To": PHONE, "Body": "x"}, auth=auth).json()["code"] == 21603
    assert httpx.post(url, data={"To": PHONE, "From": SENDER}, auth=auth).json()["code"] == 21602
    assert httpx.get(url, auth=auth).status_code == 405
    assert httpx.post(fake_twilio.base_url + "/nope", auth=auth).json()["code"] == 20404


def test_auth(fake_twilio: FakeTwilio) -> None:
    url = f"{fake_twilio.base_url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Messages.json"
    form = {"To": PHONE, "From": SENDER, "Body": "x"}
    missing = httpx.post(url, data=form)
    assert missing.status_code == 401
    assert missing.json()["code"] == 20003
    wrong = httpx.post(url, data=form, auth=(fake_twilio.account_sid, "wrong"))
    assert wrong.status_code == 401
    other_sid, other_token = fake_twilio.add_account()
    assert httpx.post(url, data=form, auth=(other_sid, other_token)).status_code == 403
    key_sid, key_secret = fake_twilio.add_api_key()
    assert httpx.post(url, data=form, auth=(key_sid, key_secret)).status_code == 201


def test_parent_credentials_act_on_subaccount(fake_twilio: FakeTwilio) -> None:
    sub_sid, _ = fake_twilio.add_account(parent=fake_twilio.account_sid)
    client = fake_twilio.client()
    message = client.api.v2010.accounts(sub_sid).messages.create(to=PHONE, from_=SENDER, body="x")
    assert message.account_sid == sub_sid
    _feedback(fake_twilio, message.sid, sub_sid)
    assert fake_twilio.feedback[0].account_sid == sub_sid


def test_unknown_message_is_404_20404(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(TwilioRestException) as info:
        _feedback(fake_twilio, "SM" + "0" * 32)
    assert (info.value.status, info.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException):
        _feedback(fake_twilio, "not-a-sid")
    assert fake_twilio.feedback == []


def test_fault_sequence_then_success(fake_twilio: FakeTwilio) -> None:
    sid = fake_twilio.client().messages.create(to=PHONE, from_=SENDER, body="x").sid
    fake_twilio.fail_next(503, Status(429, retry_after=1))
    with pytest.raises(TwilioRestException) as first:
        _feedback(fake_twilio, sid)
    assert (first.value.status, first.value.code) == (503, 20503)
    url = _feedback_url(fake_twilio, sid)
    limited = httpx.post(
        url,
        data={"Outcome": "confirmed"},
        auth=(fake_twilio.account_sid, fake_twilio.auth_token),
    )
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.json()["code"] == 20429
    _feedback(fake_twilio, sid)
    assert len(fake_twilio.feedback) == 1


def test_fail_always_until_cleared(fake_twilio: FakeTwilio) -> None:
    sid = fake_twilio.client().messages.create(to=PHONE, from_=SENDER, body="x").sid
    fake_twilio.fail_always(500)
    for _ in range(3):
        with pytest.raises(TwilioRestException):
            _feedback(fake_twilio, sid)
    fake_twilio.clear_faults()
    _feedback(fake_twilio, sid)
    assert len(fake_twilio.feedback) == 1


def test_drop_surfaces_as_connection_error(fake_twilio: FakeTwilio) -> None:
    sid = fake_twilio.client().messages.create(to=PHONE, from_=SENDER, body="x").sid
    fake_twilio.fail_next(Drop())
    with pytest.raises(requests.ConnectionError):
        _feedback(fake_twilio, sid)
    assert fake_twilio.requests[-1].status is None


@pytest.mark.timeout(30)
def test_hang_is_released_by_stop_promptly() -> None:
    fake = FakeTwilio().start()
    sid = fake.client().messages.create(to=PHONE, from_=SENDER, body="x").sid
    fake.fail_next(Hang())
    url = _feedback_url(fake, sid)
    with httpx.Client() as http:
        import threading

        outcome: list[object] = []

        def post() -> None:
            try:
                outcome.append(
                    http.post(
                        url,
                        data={"Outcome": "confirmed"},
                        auth=(fake.account_sid, fake.auth_token),
                        timeout=20,
                    )
                )
            except httpx.HTTPError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=post)
        thread.start()
        assert fake.wait_for(lambda: not fake._faults["feedback"], 5)  # the hang has begun
        started = time.monotonic()
        fake.stop()
        thread.join(10)
        assert time.monotonic() - started < 3
        assert not thread.is_alive()
    assert fake.feedback == []


def test_latency_and_delay(fake_twilio: FakeTwilio) -> None:
    client = fake_twilio.client()
    fake_twilio.latency = 0.3
    started = time.monotonic()
    client.messages.create(to=PHONE, from_=SENDER, body="x")
    assert time.monotonic() - started >= 0.3
    fake_twilio.latency = 0
    fake_twilio.fail_next(Delay(0.2), endpoint="messages")
    started = time.monotonic()
    client.messages.create(to=PHONE, from_=SENDER, body="x")
    assert time.monotonic() - started >= 0.2
    assert len(fake_twilio.messages) == 2


def test_wait_for_feedback_times_out_with_a_message(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(TimeoutError, match="expected 1 feedback post"):
        fake_twilio.wait_for_feedback(1, timeout=0.1)


def test_repr_hides_token(fake_twilio: FakeTwilio) -> None:
    assert fake_twilio.auth_token not in repr(fake_twilio)
