"""End to end over real HTTP: the official twilio client talks to FakeTwilio."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from twilio_feedback import FeedbackTracker, Settings, State, Ticket
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.tokens import TokenSigner
from twilio_feedback.tracker import key_tracking_id

from .conftest import SECRET_KEY
from .servers import wait_until

PHONE = "+15558675310"
SENDER = "+15017122661"


def test_send_link_confirm_reports_once(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    message = tracker.send(
        to=PHONE, from_=SENDER, body="Confirm: {link}", link="https://app.example/confirm?x=1"
    )
    [created] = fake_twilio.messages
    assert created.sid == message.sid
    assert created.provide_feedback is True
    assert "https://app.example/confirm?x=1&id=" in created.body
    token = created.body.rsplit("id=", 1)[1]
    assert len(token) <= 32

    result = tracker.confirm_token(token)
    assert result.status == "confirmed"
    assert result.message_sid == message.sid

    [post] = fake_twilio.wait_for_feedback(1, timeout=5)
    assert post.message_sid == message.sid
    assert post.outcome == "confirmed"
    assert post.account_sid == fake_twilio.account_sid

    assert tracker.confirm_token(token).status == "duplicate"
    assert tracker.flush(timeout=5) == 0
    assert len(fake_twilio.feedback) == 1
    assert tracker.store.get(result.tracking_id or "").state is State.REPORTED  # type: ignore[union-attr]


def test_nothing_posted_for_bad_confirms(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    tracker.send(to=PHONE, from_=SENDER, body="Go {link}", link="https://app.example/confirm")
    token = fake_twilio.messages[0].body.rsplit("id=", 1)[1]
    unbound = tracker.ticket().token
    expired = TokenSigner(SECRET_KEY, timer=lambda: time.time() - 30 * 24 * 3600).issue()[1]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert tracker.confirm_token(unbound).status == "unknown"
    assert tracker.confirm_token(expired).status == "expired"
    assert tracker.confirm_token(tampered).status == "invalid"
    assert tracker.confirm_token("").status == "invalid"
    assert tracker.confirm_token("x" * 5000).status == "invalid"
    assert tracker.confirm(key="never-bound").status == "unknown"
    assert tracker.flush(timeout=5) == 0
    assert fake_twilio.feedback == []


def test_key_flow(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    message = tracker.send(to=PHONE, from_=SENDER, body="Your code is 123456", key="login:42")
    assert fake_twilio.messages[0].provide_feedback is True
    assert tracker.confirm(key="login:41").status == "unknown"
    result = tracker.confirm(key="login:42")
    assert (result.status, result.message_sid) == ("confirmed", message.sid)
    assert fake_twilio.wait_for_feedback(1, timeout=5)[0].message_sid == message.sid
    assert tracker.confirm(key="login:42").status == "duplicate"


def test_bind_by_hand(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    client = fake_twilio.client()
    ticket = tracker.ticket()
    url = ticket.link("https://app.example/confirm")
    msg = client.messages.create(to=PHONE, from_=SENDER, body=f"Open {url}", provide_feedback=True)
    tracker.bind(ticket, msg.sid)
    assert tracker.confirm_token(ticket.token).confirmed
    assert fake_twilio.wait_for_feedback(1, timeout=5)[0].message_sid == msg.sid


def test_click_racing_the_send_is_reported_once_sid_known(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    # The emulator answers the create slowly; the link is "clicked" before it returns.
    fake_twilio.latency = 0.5
    captured: list[Ticket] = []
    issued = threading.Event()
    original = tracker.ticket

    def spy() -> Ticket:
        ticket = original()
        captured.append(ticket)
        issued.set()
        return ticket

    tracker.ticket = spy  # type: ignore[method-assign]
    sender = threading.Thread(
        target=lambda: tracker.send(
            to=PHONE, from_=SENDER, body="{link}", link="https://a.example/c"
        )
    )
    sender.start()
    assert issued.wait(5)
    # The click comes once the record is stored (send() stores it before calling Twilio)
    # and while Twilio's answer is still on its way.
    wait_until(
        lambda: tracker.store.get(captured[0].tracking_id) is not None, 5, "the record stored"
    )
    results = [tracker.confirm_token(captured[0].token)]
    assert sender.is_alive()
    sender.join(5)
    fake_twilio.latency = 0
    assert results[0].status == "confirmed"
    assert results[0].message_sid is None
    [post] = fake_twilio.wait_for_feedback(1, timeout=5)
    assert post.message_sid == fake_twilio.messages[0].sid


def test_refused_message_leaves_no_record(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    from twilio.base.exceptions import TwilioRestException

    with pytest.raises(TwilioRestException) as info:
        tracker.send(to="", from_=SENDER, body="code 1", key="k")
    assert info.value.status == 400
    assert tracker.store.get(key_tracking_id("k")) is None


def test_send_requires_link_placeholder(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    with pytest.raises(ValueError, match=r"\{link\}"):
        tracker.send(to=PHONE, from_=SENDER, body="no placeholder", link="https://a.example/c")
    with pytest.raises(ValueError, match=r"link= .* or key="):
        tracker.send(to=PHONE, from_=SENDER, body="x")
    assert fake_twilio.messages == []


def test_bind_validates_sid(tracker: FeedbackTracker) -> None:
    with pytest.raises(ValueError, match="not a Twilio message SID"):
        tracker.bind(tracker.ticket(), "SMnope")
    with pytest.raises(ValueError, match="either a ticket or key"):
        tracker.bind(message_sid="SM" + "a" * 32)


def test_subaccount_feedback_goes_to_its_account(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    sub_sid, _ = fake_twilio.add_account(parent=fake_twilio.account_sid)
    message = tracker.send(to=PHONE, from_=SENDER, body="code", key="sub:1", account_sid=sub_sid)
    assert message.account_sid == sub_sid
    assert tracker.confirm(key="sub:1").confirmed
    [post] = fake_twilio.wait_for_feedback(1, timeout=5)
    assert (post.account_sid, post.message_sid) == (sub_sid, message.sid)
    record = tracker.store.get(key_tracking_id("sub:1"))
    assert record is not None
    assert record.account_sid == sub_sid


def test_own_account_is_not_stored_on_records(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    # Records of the settings' own account keep None (fewer bytes per record in every
    # store); the reporter posts them to the settings' account.
    message = tracker.send(to=PHONE, from_=SENDER, body="code", key="own:1")
    assert message.account_sid == fake_twilio.account_sid
    sent = tracker.store.get(key_tracking_id("own:1"))
    assert sent is not None
    assert (sent.message_sid, sent.account_sid) == (message.sid, None)
    named = tracker.send(
        to=PHONE, from_=SENDER, body="code", key="own:2", account_sid=fake_twilio.account_sid
    )
    bound = tracker.bind(key="own:3", message_sid=named.sid, account_sid=fake_twilio.account_sid)
    assert bound.account_sid is None
    assert tracker.store.get(key_tracking_id("own:2")).account_sid is None  # type: ignore[union-attr]
    assert tracker.confirm(key="own:1").confirmed
    [post] = fake_twilio.wait_for_feedback(1, timeout=5)
    assert (post.account_sid, post.message_sid) == (fake_twilio.account_sid, message.sid)


def test_api_key_credentials(settings: Settings, fake_twilio: FakeTwilio) -> None:
    key_sid, key_secret = fake_twilio.add_api_key()
    creds = settings.replace(auth_token=None, api_key_sid=key_sid, api_key_secret=key_secret)
    with FeedbackTracker(creds) as tracker:
        tracker.send(to=PHONE, from_=SENDER, body="code", key="apikey")
        assert tracker.confirm(key="apikey").confirmed
        assert fake_twilio.wait_for_feedback(1, timeout=5)


def test_ticket_link_keeps_query_and_fragment(tracker: FeedbackTracker) -> None:
    ticket = tracker.ticket()
    link = ticket.link("https://app.example/confirm?a=b%20c&id=old&id=older&z=#top")
    assert link == f"https://app.example/confirm?a=b%20c&z=&id={ticket.token}#top"
    assert ticket.token not in repr(ticket)


def test_secrets_never_logged(
    settings: Settings, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with FeedbackTracker(settings) as tracker:
        tracker.send(to=PHONE, from_=SENDER, body="{link}", link="https://a.example/c")
        token = fake_twilio.messages[0].body.rsplit("id=", 1)[1]
        tracker.confirm_token(token)
        tracker.confirm_token(token[:-2] + "zz")
        tracker.flush(5)
    text = caplog.text + repr(tracker) + repr(settings)
    for secret in (settings.auth_token or "", SECRET_KEY, token):
        assert secret not in text


async def test_async_twins(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    message = await tracker.send_async(
        to=PHONE, from_=SENDER, body="Open {link}", link="https://a.example/c"
    )
    token = fake_twilio.messages[0].body.rsplit("id=", 1)[1]
    assert (await tracker.confirm_token_async(token)).confirmed
    assert (await tracker.confirm_token_async(token)).status == "duplicate"
    await tracker.bind_async(key="async-key", message_sid=message.sid)
    assert (await tracker.confirm_async(key="async-key")).confirmed
    assert await tracker.flush_async(5) == 0
    assert len(fake_twilio.wait_for_feedback(2, timeout=5)) == 2
