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
    "secret_key": (("o" * 32, "n" * 32), "o" * 32 + " " + "n" * 32),
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
    "deferred_size": (0, "0"),
    "retry_window": (600.0, "600"),
    "sweep_interval": (3.0, "3"),
    "lease_seconds": (20.0, "20"),
    "bot_user_agents": (("MyScanner", "Other/\\d"), "MyScanner,Other/\\d"),
    "default_bot_list": (False, "false"),
    "count_test_clients": (True, "yes"),
    "confirmed_redirect": ("/welcome", "/welcome"),
    "invalid_redirect": ("https://app.example/oops", "https://app.example/oops"),
    "expired_redirect": ("/expired", "/expired"),
    "hide_token": (True, "1"),
    "insights": (False, "off"),
    "reporter": ("off", "off"),
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
        ({"deferred_size": -1}, "deferred_size must be a non-negative integer"),
        ({"confirmed_redirect": "//evil.example"}, "confirmed_redirect must be"),
        ({"bot_user_agents": ("(",)}, "not a regular expression"),
        ({"hide_token": "maybe"}, "hide_token must be true or false"),
        ({"count_test_clients": "sometimes"}, "count_test_clients must be true or false"),
        ({"reporter": "threads"}, "reporter must be 'thread', 'off' or 'celery', not 'threads'"),
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


PASSWORD = "hunter2-pa55"


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


def _sql_store(url: str) -> Any:
    from twilio_feedback.stores.sql import SQLStore

    return SQLStore(url)  # an engine: no connection until first use


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("store", f"redis://:{PASSWORD}@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("store", f"redis://app:{PASSWORD}@h:6379/0", "redis://app:***@h:6379/0"),
        (
            "store",
            f"postgresql+psycopg://app@h/db?sslmode=require&password={PASSWORD}",
            "postgresql+psycopg://app@h/db?sslmode=require&password=***",
        ),
        ("store", f"redis://h/0?Password={PASSWORD}&db=1", "redis://h/0?Password=***&db=1"),
        ("store", f"sqlite:///f.db?key={PASSWORD}", "sqlite:///f.db?key=***"),
        ("api_base_url", f"https://proxy:{PASSWORD}@egress.example", "https://proxy:***@egress"),
        ("api_base_url", f"https://egress.example/?auth_token={PASSWORD}", "auth_token=***"),
        ("store", f"postgresql+psycopg://app@127.0.0.1:1/db?password={PASSWORD}", "SQLStore"),
        ("store", f"postgresql+psycopg://app:{PASSWORD}@127.0.0.1:1/db", "SQLStore"),
    ],
)
def test_passwords_in_urls_never_in_repr(field: str, value: str, shown: str) -> None:
    if shown == "SQLStore":  # a store instance built from such a URL
        settings = Settings(**BASE, store=_sql_store(value))
    else:
        settings = Settings(**BASE, **{field: value})
    text = repr(settings)
    assert PASSWORD not in text
    assert shown in text


SECRETS_IN_WRONG_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"account_sid": TOKEN}, "account_sid 'au'... (33 characters) is not a Twilio account SID"),
    ({"account_sid": "AC" + TOKEN}, "(35 characters)"),
    ({"api_key_sid": TOKEN, "api_key_secret": "x"}, "not a Twilio API key SID"),
    ({"api_base_url": TOKEN}, "api_base_url 'au'... (33 characters) must be an http(s) URL"),
    ({"api_base_url": f"ftp://u:{PASSWORD}@h"}, "api_base_url 'ftp://u:***@h' must be"),
    ({"api_base_url": f"ftp://h/?token={PASSWORD}"}, "'ftp://h/?token=***'"),
    ({"api_base_url": "http://[" + PASSWORD}, "must be an http(s) URL"),
    ({"store": TOKEN}, "store 'au'... (33 characters) is not a URL"),
    ({"store": f"mongodb://u:{PASSWORD}@db/x?password={PASSWORD}"}, "'mongodb' is unknown"),
    ({"token_param": SECRET + "!"}, "token_param 's3'... (41 characters)"),
    ({"path_match": SECRET}, "path_match must be 'exact' or 'prefix', not 's3'..."),
    ({"confirm_methods": (SECRET,)}, "confirm method 'S3'... (40 characters)"),
    ({"token_max_age": SECRET}, "token_max_age must be a number of seconds"),
    ({"queue_size": SECRET}, "queue_size must be an integer, not 's3'..."),
    ({"hide_token": SECRET}, "hide_token must be true or false, not 's3'..."),
    ({"secret_key": SECRET + "," + SECRET}, "secret_key contains a comma"),
    ({"secret_key": [SECRET, SECRET + ",x"]}, "secret_key #2 contains a comma"),
    ({"secret_key": [SECRET, SECRET[:20]]}, "secret_key #2 is 20 characters"),
]


@pytest.mark.parametrize(("changes", "message"), SECRETS_IN_WRONG_FIELDS)
def test_errors_show_at_most_an_excerpt_of_a_bad_value(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(**{**BASE, **changes})
    text = str(info.value)
    assert message in text
    for secret in (TOKEN, SECRET, PASSWORD, TOKEN[:9], SECRET[:9], PASSWORD[:9]):
        assert secret not in text, text
        assert secret.upper() not in text, text


def test_a_comma_in_a_key_says_how_to_give_several() -> None:
    with pytest.raises(ConfigurationError, match=r"pass a list.*separate them with spaces"):
        Settings(**{**BASE, "secret_key": "a" * 32 + "," + "b" * 32})
    env = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN}
    with pytest.raises(ConfigurationError, match="contains a comma"):
        Settings.from_env({**env, "TWILIO_FEEDBACK_SECRET_KEY": "a" * 32 + "," + "b" * 32})


def test_several_keys_are_a_list_or_separated_by_whitespace_in_the_environment() -> None:
    old, new = "o" * 40, "n" * 40
    env = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": TOKEN}
    for text in (f"{old} {new}", f"  {old}\n{new}\n", f"{old}\t{new}"):
        settings = Settings.from_env({**env, "TWILIO_FEEDBACK_SECRET_KEY": text})
        assert settings.secret_keys == (old, new)
    single = Settings.from_env({**env, "TWILIO_FEEDBACK_SECRET_KEY": f"{new}\n"})
    assert single.secret_keys == (new,)
    assert Settings(**{**BASE, "secret_key": [old, new]}).secret_keys == (old, new)
    # In Python one str is one key, whatever it holds.
    spaced = "correct horse battery staple " * 2
    assert Settings(**{**BASE, "secret_key": spaced}).secret_keys == (spaced,)


def test_settings_are_immutable_and_replace_validates() -> None:
    settings = Settings(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.token_param = "x"  # type: ignore[misc]
    with pytest.raises(ConfigurationError):
        settings.replace(secret_key="short")


def test_redact_url_example_from_the_docs() -> None:
    from twilio_feedback.settings import redact_url

    assert (
        redact_url("postgresql://app:s3cret@db/feedback?sslmode=require&password=s3cret")
        == "postgresql://app:***@db/feedback?sslmode=require&password=***"
    )


@pytest.mark.parametrize("mode", ["thread", "off", "celery", "OFF", " Celery "])
def test_reporter_modes(mode: str) -> None:
    assert Settings(**BASE, reporter=mode).reporter == mode.strip().lower()
    assert Settings(**BASE).reporter == "thread"
