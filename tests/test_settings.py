from __future__ import annotations

import dataclasses
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from twilio_feedback import ConfigurationError, Settings
from twilio_feedback.stores.memory import MemoryStore

SID = "AC" + "0123456789abcdef" * 2
KEY_SID = "SK" + "fedcba9876543210" * 2
TOKEN = "auth-token-value-0123456789abcdef"
SECRET = "s3cret-key-value-that-is-long-enough-xyz"
BASE = {"account_sid": SID, "auth_token": TOKEN, "secret_key": SECRET}

# Every field with a non-default value, and its string form for the environment.
FULL: dict[str, tuple[Any, str]] = {
    "account_sid": (SID, SID),
    "auth_token": (TOKEN, TOKEN),
    "api_key_sid": (KEY_SID, KEY_SID),
    "api_key_secret": ("api-key-secret-value", "api-key-secret-value"),
    "secret_key": (("o" * 32, "n" * 32), "o" * 32 + "," + "n" * 32),
    "store": ("redis://127.0.0.1:6390/2", "redis://127.0.0.1:6390/2"),
    "confirm_paths": (("/c", "/verify"), "/c,/verify"),
    "path_match": ("prefix", "prefix"),
    "confirm_methods": (("GET",), "get"),
    "token_param": ("t", "t"),
    "token_max_age": (3600.0, "3600"),
    "api_base_url": ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    "salt": ("my-salt", "my-salt"),
    "clock_skew": (5.0, "5"),
    "request_timeout": (2.5, "2.5"),
    "reporter_concurrency": (8, "8"),
    "queue_size": (50, "50"),
    "retry_window": (600.0, "600"),
    "sweep_interval": (3.0, "3"),
    "lease_seconds": (20.0, "20"),
    "bot_user_agents": (("MyScanner", "Other/\\d"), "MyScanner,Other/\\d"),
    "default_bot_list": (False, "false"),
    "confirmed_redirect": ("/welcome", "/welcome"),
    "invalid_redirect": ("https://app.example/oops", "https://app.example/oops"),
    "expired_redirect": ("/expired", "/expired"),
    "hide_token": (True, "1"),
}


def test_full_covers_every_field() -> None:
    assert set(FULL) == {f.name for f in dataclasses.fields(Settings)}


def test_round_trip_every_field_through_env() -> None:
    env = {}
    for name, (_, text) in FULL.items():
        env[Settings.env_names()[name][-1]] = text
    settings = Settings.from_env(env)
    for name, (value, _) in FULL.items():
        assert getattr(settings, name) == value, name


def test_round_trip_every_field_through_mapping_typed_and_named() -> None:
    typed = {name: value for name, (value, _) in FULL.items()}
    assert Settings.from_mapping(typed) == Settings(**typed)
    upper = {Settings.env_names()[name][-1]: value for name, value in typed.items()}
    assert Settings.from_mapping(upper) == Settings(**typed)


def test_twilio_sdk_variable_names_are_read() -> None:
    env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_API_KEY": KEY_SID,
        "TWILIO_API_SECRET": "secret",
        "TWILIO_FEEDBACK_SECRET_KEY": SECRET,
    }
    settings = Settings.from_env(env)
    assert settings.api_key_sid == KEY_SID
    assert settings.auth_token is None


def test_from_mapping_reads_a_settings_object() -> None:
    django_like = SimpleNamespace(
        TWILIO_ACCOUNT_SID=SID,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_FEEDBACK_SECRET_KEY=SECRET,
        TWILIO_FEEDBACK_TOKEN_MAX_AGE=timedelta(hours=2),
        TWILIO_FEEDBACK_CONFIRM_PATHS=["/a", "/b"],
    )
    settings = Settings.from_mapping(django_like)
    assert settings.token_max_age == 7200.0
    assert settings.confirm_paths == ("/a", "/b")


def test_overrides_win() -> None:
    settings = Settings.from_env({}, **BASE, token_param="x")
    assert settings.token_param == "x"


def test_timedelta_and_store_instance() -> None:
    store = MemoryStore()
    settings = Settings(**BASE, token_max_age=timedelta(days=1), store=store)
    assert settings.token_max_age == 86400.0
    assert settings.store is store


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"account_sid": None}, "account_sid is missing"),
        ({"account_sid": "AC123"}, "not a Twilio account SID"),
        ({"auth_token": None}, "credentials are missing"),
        ({"api_key_sid": KEY_SID}, "go together"),
        ({"api_key_sid": "SKnope", "api_key_secret": "x"}, "not a Twilio API key SID"),
        ({"secret_key": None}, "secret_key is missing"),
        ({"secret_key": "short"}, "secret_key is 5 characters"),
        ({"secret_key": ["x" * 40, "short"]}, "secret_key #2 is 5 characters"),
        ({"store": "mongodb://db"}, "store scheme 'mongodb' is unknown"),
        ({"confirm_paths": ("confirm",)}, "must start with '/'"),
        ({"confirm_paths": ()}, "confirm_paths is empty"),
        ({"path_match": "regex"}, "path_match must be"),
        ({"token_param": "has space"}, "token_param"),
        ({"token_max_age": 0}, "token_max_age must be positive"),
        ({"token_max_age": "soon"}, "number of seconds"),
        ({"api_base_url": "ftp://x"}, "api_base_url"),
        ({"reporter_concurrency": 0}, "reporter_concurrency must be a positive integer"),
        ({"queue_size": "many"}, "queue_size must be an integer"),
        ({"confirmed_redirect": "//evil.example"}, "confirmed_redirect must be"),
        ({"bot_user_agents": ("(",)}, "not a regular expression"),
        ({"hide_token": "maybe"}, "hide_token must be true or false"),
    ],
)
def test_each_bad_configuration_has_its_own_clear_error(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        Settings(**{**BASE, **changes})
    assert TOKEN not in str(info.value)
    assert SECRET not in str(info.value)


def test_misspelt_environment_variable_is_an_error() -> None:
    env = {
        "TWILIO_ACCOUNT_SID": SID,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FEEDBACK_SECRET_KEY": SECRET,
        "TWILIO_FEEDBACK_STOER": "memory://",
    }
    with pytest.raises(ConfigurationError, match="TWILIO_FEEDBACK_STOER is not"):
        Settings.from_env(env)


def test_secrets_never_in_repr() -> None:
    settings = Settings(
        **BASE,
        api_key_sid=KEY_SID,
        api_key_secret="api-key-secret-value",
        store="redis://:hunter2@127.0.0.1:6379/0",
    )
    text = repr(settings)
    for secret in (TOKEN, SECRET, "api-key-secret-value", "hunter2"):
        assert secret not in text
    assert SID in text


def test_settings_are_immutable_and_replace_validates() -> None:
    settings = Settings(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.token_param = "x"  # type: ignore[misc]
    with pytest.raises(ConfigurationError):
        settings.replace(secret_key="short")
