"""The Flask extension: app factories, app.config, a key derived from SECRET_KEY, the
request's result, ``flask twilio-feedback``, and Flask's own test client."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Blueprint, Flask, url_for

from twilio_feedback import ConfigurationError, FeedbackTracker, Record, Settings
from twilio_feedback.flask import (
    TwilioFeedback,
    confirm_result,
    get_tracker,
    settings_from_config,
)
from twilio_feedback.stores import store_from_url
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.tokens import TokenSigner, derive_key

TO = "+15558675310"
FLASK_KEY = "flask-secret-key-0123456789abcdef-0123456789"
OLD_FLASK_KEY = "an-older-flask-secret-key-0123456789abcdef"

views = Blueprint("views", __name__)


@views.post("/send")
def send() -> dict[str, Any]:
    message = get_tracker().send(
        to=TO, from_="+15017122661", body="Open {link}", link=url_for(".confirm", _external=True)
    )
    return {"message_sid": message.sid}


@views.route("/confirm", methods=["GET", "POST"])
def confirm() -> dict[str, Any]:
    result = confirm_result()
    assert result is not None
    return {"status": result.status, "message_sid": result.message_sid}


@views.get("/other")
def other() -> dict[str, Any]:
    result = confirm_result()
    return {"result": None if result is None else result.status}


feedback = TwilioFeedback()


def create_app(config: dict[str, Any]) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    feedback.init_app(app)
    app.register_blueprint(views)
    return app


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        get_tracker(app).close(timeout=1.0)


def _app(apps: list[Flask], config: dict[str, Any]) -> Flask:
    app = create_app(config)
    apps.append(app)
    return app


def test_an_app_factory_with_its_test_client(
    apps: list[Flask], twilio_feedback_env: dict[str, str], fake_twilio: FakeTwilio
) -> None:
    app = _app(apps, twilio_feedback_env)
    tracker = app.extensions["twilio_feedback"]
    assert isinstance(tracker, FeedbackTracker)
    with app.app_context():
        assert get_tracker() is tracker is feedback.tracker
    client = app.test_client()
    sid = client.post("/send").json["message_sid"]  # type: ignore[index]
    link = fake_twilio.last_link(to=TO)
    assert client.head(link).status_code == 200
    assert client.get(link).json == {"status": "confirmed", "message_sid": sid}
    assert client.get(link).json["status"] == "duplicate"  # type: ignore[index]
    assert client.get("/other?id=x").json == {"result": None}
    fake_twilio.wait_for_feedback(1)
    assert [p.message_sid for p in fake_twilio.feedback] == [sid]


def test_several_apps_in_one_process(
    apps: list[Flask], twilio_feedback_env: dict[str, str], fake_twilio: FakeTwilio
) -> None:
    first = _app(apps, twilio_feedback_env)
    second = _app(apps, {**twilio_feedback_env, "TWILIO_FEEDBACK_CONFIRM_PATHS": "/other"})
    assert get_tracker(first) is not get_tracker(second)
    assert feedback.settings is None  # the extension object holds no app's state
    first.test_client().post("/send")
    token = fake_twilio.last_token()
    # The second app has its own store and its own confirm path.
    assert second.test_client().get(f"/other?id={token}").json == {"result": "unknown"}
    assert first.test_client().get(f"/other?id={token}").json == {"result": None}
    assert first.test_client().get(f"/confirm?id={token}").json["status"] == "confirmed"  # type: ignore[index]


def test_the_werkzeug_test_client_is_not_a_person_by_default(
    apps: list[Flask], twilio_feedback_env: dict[str, str], fake_twilio: FakeTwilio
) -> None:
    app = _app(apps, {**twilio_feedback_env, "TWILIO_FEEDBACK_COUNT_TEST_CLIENTS": False})
    client = app.test_client()
    client.post("/send")
    assert client.get(fake_twilio.last_link()).json["status"] == "ignored"  # type: ignore[index]


def test_a_misspelt_setting_is_an_error(twilio_feedback_env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="TWILIO_FEEDBACK_STOR is not a twilio-feedback"):
        create_app({**twilio_feedback_env, "TWILIO_FEEDBACK_STOR": "sqlite:///x.db"})


def test_other_config_is_left_alone(fake_twilio: FakeTwilio) -> None:
    config = {
        **fake_twilio.environ(),
        "SECRET_KEY": FLASK_KEY,
        "TWILIO_PHONE_NUMBER": "+15017122661",  # the app's own
        "store": "redis://not-ours",  # not a TWILIO_* name: not read
        "DEBUG": True,
    }
    settings = settings_from_config(config)
    assert settings.store == "memory://"
    assert settings.api_base_url == fake_twilio.base_url


def test_the_signing_key_comes_from_secret_key(fake_twilio: FakeTwilio) -> None:
    settings = settings_from_config({**fake_twilio.environ(), "SECRET_KEY": FLASK_KEY})
    assert settings.secret_keys == (derive_key(FLASK_KEY),)
    assert derive_key(FLASK_KEY) != FLASK_KEY
    assert len(derive_key(FLASK_KEY)) == 43
    assert derive_key(FLASK_KEY.encode()) == derive_key(FLASK_KEY)
    own = "a-key-of-its-own-0123456789abcdef-xyz"
    explicit = {**fake_twilio.environ(), "SECRET_KEY": FLASK_KEY, "TWILIO_FEEDBACK_SECRET_KEY": own}
    assert settings_from_config(explicit).secret_keys == (own,)


def test_rotating_the_flask_key_keeps_links_working(
    apps: list[Flask], fake_twilio: FakeTwilio
) -> None:
    base = {
        **fake_twilio.environ(),
        "TWILIO_FEEDBACK_STORE": "memory://?warn=false",
        "TWILIO_FEEDBACK_COUNT_TEST_CLIENTS": True,
    }
    old = settings_from_config({**base, "SECRET_KEY": OLD_FLASK_KEY})
    token = TokenSigner(old.secret_keys).issue()[1]
    rotated = {**base, "SECRET_KEY": FLASK_KEY, "SECRET_KEY_FALLBACKS": [OLD_FLASK_KEY]}
    settings = settings_from_config(rotated)
    assert settings.secret_keys == (derive_key(OLD_FLASK_KEY), derive_key(FLASK_KEY))
    app = _app(apps, rotated)
    # Unknown to this app's store, but genuine: the old key still verifies it.
    assert app.test_client().get(f"/confirm?id={token}").json["status"] == "unknown"  # type: ignore[index]
    gone = _app(apps, {**base, "SECRET_KEY": FLASK_KEY})
    assert gone.test_client().get(f"/confirm?id={token}").json["status"] == "invalid"  # type: ignore[index]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"SECRET_KEY": "dev"}, "SECRET_KEY .* is 3 characters, too short"),
        ({"SECRET_KEY": FLASK_KEY, "SECRET_KEY_FALLBACKS": ["old"]}, "is 3 characters"),
        ({}, "secret_key is missing"),
        ({"SECRET_KEY_FALLBACKS": [OLD_FLASK_KEY]}, "SECRET_KEY_FALLBACKS is set but"),
    ],
)
def test_keys_that_cannot_sign_are_refused(
    fake_twilio: FakeTwilio, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_app({**fake_twilio.environ(), **config})


def test_explicit_settings_and_double_initialisation(
    apps: list[Flask], twilio_feedback_settings: Settings
) -> None:
    app = Flask(__name__)
    extension = TwilioFeedback(app, settings=twilio_feedback_settings)
    apps.append(app)
    assert get_tracker(app).settings is twilio_feedback_settings
    with pytest.raises(RuntimeError, match=r"initialised on .* already"):
        extension.init_app(app)
    with pytest.raises(RuntimeError, match="not initialised"):
        get_tracker(Flask("bare"))


def test_flask_twilio_feedback_commands(
    apps: list[Flask], twilio_feedback_env: dict[str, str], fake_twilio: FakeTwilio, tmp_path: Path
) -> None:
    pytest.importorskip("sqlalchemy")
    store = f"sqlite:///{tmp_path / 'feedback.db'}"
    app = _app(apps, {**twilio_feedback_env, "TWILIO_FEEDBACK_STORE": store})
    runner = app.test_cli_runner()
    # The app's tracker has a reporter of its own: it hands over to the command (which
    # closes it first) once it has nothing left.
    get_tracker(app).close()
    [sid] = fake_twilio.add_messages(1)
    now = time.time()
    records = store_from_url(store)
    records.add(Record("t1", expires_at=now + 60, message_sid=sid, created_at=now))
    assert records.confirm("t1", now=now, lease_until=now, keep_until=now + 3600)[0]
    records.close()

    status = runner.invoke(args=["twilio-feedback", "status"])
    assert status.exit_code == 0, status.output
    assert re.search(r"confirmed +1 ", status.output), status.output
    drained = runner.invoke(args=["twilio-feedback", "drain", "--quiet", "--timeout", "30"])
    assert drained.exit_code == 0, drained.output
    assert "1 reported, 0 failed, 0 left undelivered" in drained.output
    assert [p.message_sid for p in fake_twilio.feedback] == [sid]

    usage = runner.invoke(args=["twilio-feedback", "--help"])
    assert usage.exit_code == 0
    assert "usage: flask twilio-feedback" in usage.output
    assert runner.invoke(args=["twilio-feedback"]).exit_code == 2


def cli_commands() -> list[str]:
    """Every command of ``twilio-feedback``, read from its parser."""
    import argparse

    from twilio_feedback import cli

    parser = cli._parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(commands.choices)


def lists_every_command(text: str) -> bool:
    """Whether ``text`` names every command, in order, as one comma-separated list (lines
    joined again where help wrapped them, at a space or after a hyphen)."""
    flat = " ".join(re.sub(r"-\n\s*", "-", text).split())
    return ", ".join(cli_commands()) in flat


def test_the_flask_command_lists_every_command(
    apps: list[Flask], twilio_feedback_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    runner = _app(apps, twilio_feedback_env).test_cli_runner()
    overview = runner.invoke(args=["--help"])  # as `flask --help` lists the app's commands
    assert overview.exit_code == 0, overview.output
    assert lists_every_command(overview.output), overview.output
    usage = runner.invoke(args=["twilio-feedback", "--help"])
    assert usage.exit_code == 0, usage.output
    assert all(f"\n    {name} " in usage.output for name in cli_commands()), usage.output


def test_memory_store_commands_say_what_to_do(
    apps: list[Flask], twilio_feedback_env: dict[str, str]
) -> None:
    runner = _app(apps, twilio_feedback_env).test_cli_runner()
    result = runner.invoke(args=["twilio-feedback", "status"])
    assert result.exit_code == 2
    assert "memory:// lives inside each app process" in result.output
