"""The pytest plugin's app-testing fixtures, and the emulator helpers they rest on."""

from __future__ import annotations

import os
import warnings

import pytest

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.stores import store_from_url
from twilio_feedback.stores.memory import MemoryStore, MemoryStoreWarning
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.testing.plugin import TEST_SECRET_KEY

TO = "+15558675310"
FROM = "+15017122661"


def test_environ_points_at_the_emulator(fake_twilio: FakeTwilio) -> None:
    environ = fake_twilio.environ()
    assert environ == {
        "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
        "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
        "TWILIO_FEEDBACK_API_BASE_URL": fake_twilio.base_url,
    }
    settings = Settings.from_env(environ, secret_key=TEST_SECRET_KEY)
    with FeedbackTracker(settings, store=MemoryStore()) as tracker:
        tracker.send(to=TO, from_=FROM, body="c", key="k")
    assert len(fake_twilio.messages) == 1


def test_last_link_and_token_of_a_number(fake_twilio: FakeTwilio) -> None:
    client = fake_twilio.client()
    client.messages.create(to=TO, from_=FROM, body="Open http://a.example/c?id=first.")
    client.messages.create(to="+15550000000", from_=FROM, body="http://b.example/c?id=other")
    client.messages.create(
        to=TO, from_=FROM, body="See https://x.example/ or (https://a.example/c?x=1&id=tok)"
    )
    assert fake_twilio.last_link(to=TO) == "https://a.example/c?x=1&id=tok"
    assert fake_twilio.last_token(to=TO) == "tok"
    assert fake_twilio.last_link() == "https://a.example/c?x=1&id=tok"
    assert fake_twilio.last_token(to="+15550000000") == "other"
    with pytest.raises(AssertionError, match=r"no message was sent to \+15551112222; sent to: "):
        fake_twilio.last_link(to="+15551112222")
    with pytest.raises(AssertionError, match="has no t="):
        fake_twilio.last_token(to=TO, param="t")
    client.messages.create(to=TO, from_=FROM, body="Your code is 123456")
    with pytest.raises(AssertionError, match="holds no link"):
        fake_twilio.last_link(to=TO)


def test_last_link_with_no_message_at_all(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(AssertionError, match="no message was sent to anyone; sent to: nobody"):
        fake_twilio.last_link()


def test_the_settings_fixture(twilio_feedback_settings: Settings, fake_twilio: FakeTwilio) -> None:
    s = twilio_feedback_settings
    assert (s.account_sid, s.auth_token, s.api_base_url) == (
        fake_twilio.account_sid,
        fake_twilio.auth_token,
        fake_twilio.base_url,
    )
    assert s.secret_key == TEST_SECRET_KEY
    assert s.count_test_clients is True
    assert s.store == "memory://?warn=false"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the memory store's production warning is off
        with FeedbackTracker(s) as tracker:
            tracker.send(to=TO, from_=FROM, body="Open {link}", link="https://app.example/c")
            assert tracker.confirm_token(fake_twilio.last_token(to=TO)).confirmed
            fake_twilio.wait_for_feedback(1)


@pytest.fixture
def developer_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a developer's shell may hold: it must not leak into the app under test."""
    monkeypatch.setenv("TWILIO_FEEDBACK_STORE", "redis://prod.example:6379/0")
    monkeypatch.setenv("TWILIO_FEEDBACK_CONFIRM_PATHS", "/elsewhere")
    monkeypatch.setenv("TWILIO_API_KEY", "SK" + "0" * 32)
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", FROM)


def test_the_environment_fixture(
    developer_environment: None,
    twilio_feedback_env: dict[str, str],
    twilio_feedback_settings: Settings,
) -> None:
    for name, value in twilio_feedback_env.items():
        assert os.environ[name] == value
    assert "TWILIO_FEEDBACK_CONFIRM_PATHS" not in os.environ
    assert "TWILIO_API_KEY" not in os.environ
    assert os.environ["TWILIO_PHONE_NUMBER"] == FROM  # the app's own variables stay
    assert Settings.from_env() == twilio_feedback_settings
    assert Settings.from_mapping(twilio_feedback_env) == twilio_feedback_settings


def test_a_memory_url_can_leave_the_warning_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from twilio_feedback.stores import memory

    monkeypatch.setattr(memory, "_warned", False)  # it warns once per process
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store_from_url("memory://?warn=false")
        store_from_url("memory://?warn=0&maxsize=10")
    with pytest.warns(MemoryStoreWarning):
        store_from_url("memory://")
