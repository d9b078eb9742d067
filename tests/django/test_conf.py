"""Settings from Django's: one dict, credentials from settings or the environment, a signing
key derived from SECRET_KEY, misspellings refused, and a rebuild when a test changes them."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from twilio_feedback.django import get_settings, get_tracker
from twilio_feedback.django.conf import validate_names
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.tokens import InvalidToken, TokenSigner, derive_key

SID = "AC" + "1" * 32
OTHER_SID = "AC" + "2" * 32
KEY_SID = "SK" + "3" * 32
NO_CREDENTIALS = {
    "TWILIO_ACCOUNT_SID": None,
    "TWILIO_AUTH_TOKEN": None,
    "TWILIO_API_KEY": None,
    "TWILIO_API_SECRET": None,
}


@pytest.fixture(autouse=True)
def no_credentials_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY", "TWILIO_API_SECRET"):
        monkeypatch.delenv(name, raising=False)


def _refused(**django_settings: object) -> str:
    with override_settings(**django_settings), pytest.raises(ImproperlyConfigured) as refused:
        validate_names()
    return str(refused.value)


def test_an_unknown_key_names_the_closest_one() -> None:
    message = _refused(TWILIO_FEEDBACK={"STOR": "django://"})
    assert "'STOR'" in message
    assert 'did you mean "STORE"?' in message
    assert 'did you mean "CONFIRM_PATHS"?' in _refused(TWILIO_FEEDBACK={"CONFIRM_PATH": []})
    assert 'did you mean "STORE"?' in _refused(TWILIO_FEEDBACK={"store": "django://"})
    assert 'did you mean "STORE"?' in _refused(TWILIO_FEEDBACK={"TWILIO_FEEDBACK_STORE": ""})
    assert "did you mean" not in _refused(TWILIO_FEEDBACK={"COLOUR": "blue"})


def test_a_stray_twilio_feedback_setting_is_refused() -> None:
    message = _refused(TWILIO_FEEDBACK_STOR="postgresql://db/app")
    assert "TWILIO_FEEDBACK_STOR is not a Django setting of twilio-feedback" in message
    assert 'TWILIO_FEEDBACK = {"STORE": ...}' in message
    message = _refused(TWILIO_FEEDBACK_CONFIRM_PATHS=["/c"])
    assert 'TWILIO_FEEDBACK = {"CONFIRM_PATHS": ...}' in message


def test_the_setting_must_be_a_dict() -> None:
    assert "must be a dict" in _refused(TWILIO_FEEDBACK=["STORE", "django://"])


def test_keys_are_settings_fields_in_upper_case() -> None:
    feedback = {"STORE": "django://", "CONFIRM_PATHS": ["/c", "/d"], "TOKEN_MAX_AGE": 600}
    with override_settings(
        TWILIO_FEEDBACK=feedback, TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN="token"
    ):
        settings = get_settings()
    assert settings.store == "django://"
    assert settings.confirm_paths == ("/c", "/d")
    assert settings.token_max_age == 600.0
    assert settings.account_sid == SID


def test_credentials_come_from_the_dict_then_django_settings_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", OTHER_SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "from-the-environment")
    with override_settings(**NO_CREDENTIALS, TWILIO_FEEDBACK={}):
        assert get_settings().account_sid == OTHER_SID
        assert get_settings().auth_token == "from-the-environment"
    with override_settings(**{**NO_CREDENTIALS, "TWILIO_ACCOUNT_SID": SID}, TWILIO_FEEDBACK={}):
        assert get_settings().account_sid == SID
        assert get_settings().auth_token == "from-the-environment"
    with override_settings(TWILIO_ACCOUNT_SID=SID, TWILIO_FEEDBACK={"ACCOUNT_SID": OTHER_SID}):
        assert get_settings().account_sid == OTHER_SID


def test_an_api_key_instead_of_the_auth_token() -> None:
    with override_settings(
        **{
            **NO_CREDENTIALS,
            "TWILIO_ACCOUNT_SID": SID,
            "TWILIO_API_KEY": KEY_SID,
            "TWILIO_API_SECRET": "key-secret",
        },
        TWILIO_FEEDBACK={},
    ):
        settings = get_settings()
    assert (settings.api_key_sid, settings.api_key_secret, settings.auth_token) == (
        KEY_SID,
        "key-secret",
        None,
    )


def test_missing_credentials_say_where_to_set_them() -> None:
    with override_settings(**NO_CREDENTIALS), pytest.raises(ImproperlyConfigured) as refused:
        get_settings()
    assert "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in str(refused.value)
    assert "settings.py or in the environment" in str(refused.value)


def test_a_value_that_cannot_work_is_refused_with_the_reason() -> None:
    with (
        override_settings(
            TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN="t", TWILIO_FEEDBACK={"CONFIRM_PATHS": ["c"]}
        ),
        pytest.raises(ImproperlyConfigured) as refused,
    ):
        get_settings()
    assert str(refused.value).startswith("TWILIO_FEEDBACK: confirm path 'c' must start with '/'")


def _signer() -> TokenSigner:
    return TokenSigner(get_settings().secret_keys)


def test_the_signing_key_is_derived_from_secret_key_and_its_fallbacks() -> None:
    old, new = "old-django-secret-" + "o" * 40, "new-django-secret-" + "n" * 40
    credentials = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t", "TWILIO_FEEDBACK": {}}
    with override_settings(**credentials, SECRET_KEY=old, SECRET_KEY_FALLBACKS=[]):
        assert get_settings().secret_keys == (derive_key(old),)
        _, token = _signer().issue()
    assert len(derive_key(old)) == 43
    assert derive_key(old) != derive_key(new)
    assert old not in derive_key(old)
    # Rotated, with the old key kept as a fallback: links in flight still verify, new
    # links are signed with the new key.
    with override_settings(**credentials, SECRET_KEY=new, SECRET_KEY_FALLBACKS=[old]):
        assert get_settings().secret_keys == (derive_key(old), derive_key(new))
        _signer().verify(token, max_age=60)
        _, fresh = _signer().issue()
        TokenSigner(derive_key(new)).verify(fresh, max_age=60)
    # Rotated without a fallback: the old links are dead.
    with (
        override_settings(**credentials, SECRET_KEY=new, SECRET_KEY_FALLBACKS=[]),
        pytest.raises(InvalidToken),
    ):
        _signer().verify(token, max_age=60)


def test_a_secret_key_in_the_dict_wins() -> None:
    key = "k" * 40
    with override_settings(
        TWILIO_ACCOUNT_SID=SID, TWILIO_AUTH_TOKEN="t", TWILIO_FEEDBACK={"SECRET_KEY": key}
    ):
        assert get_settings().secret_keys == (key,)


def test_override_settings_rebuilds_the_tracker_and_closes_the_old_one(
    fake_twilio: FakeTwilio,
) -> None:
    feedback = {"STORE": "django://", "API_BASE_URL": fake_twilio.base_url}
    credentials = {"TWILIO_ACCOUNT_SID": fake_twilio.account_sid, "TWILIO_AUTH_TOKEN": "x"}
    with override_settings(**credentials, TWILIO_FEEDBACK=feedback):
        first = get_tracker()
        assert get_tracker() is first
        with override_settings(TWILIO_FEEDBACK={**feedback, "CONFIRM_PATHS": ["/verify"]}):
            second = get_tracker()
            assert second is not first
            assert second.settings.confirm_paths == ("/verify",)
        third = get_tracker()
    assert third not in (first, second)
    assert third.settings.confirm_paths == ("/confirm",)
    assert first._closed
    assert second._closed


def test_one_tracker_however_many_threads_ask_at_once(fake_twilio: FakeTwilio) -> None:
    feedback = {"STORE": "django://", "API_BASE_URL": fake_twilio.base_url}
    with override_settings(
        TWILIO_ACCOUNT_SID=fake_twilio.account_sid, TWILIO_AUTH_TOKEN="x", TWILIO_FEEDBACK=feedback
    ):
        barrier = threading.Barrier(8)
        got: list[object] = []

        def ask() -> None:
            barrier.wait(5)
            got.append(get_tracker())

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert len(got) == 8
        assert all(tracker is got[0] for tracker in got)
