"""System checks: what ``manage.py check`` says about the twilio-feedback settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.db.utils import ConnectionHandler
from django.test import override_settings

SID = "AC" + "1" * 32
CREDENTIALS = {"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "token"}
NO_CREDENTIALS = dict.fromkeys(CREDENTIALS)


@pytest.fixture(autouse=True)
def quiet_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials and no server hints from the machine running the tests."""
    for name in (
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_API_KEY",
        "TWILIO_API_SECRET",
        "WEB_CONCURRENCY",
        "GUNICORN_CMD_ARGS",
        "UWSGI_PROCESSES",
        "UWSGI_WORKERS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _ids(deploy: bool = False, **django_settings: object) -> list[str]:
    with override_settings(**django_settings):
        return [
            m.id or ""
            for m in run_checks(tags=["twilio_feedback"], include_deployment_checks=deploy)
        ]


def _messages(**django_settings: object) -> list[str]:
    with override_settings(**django_settings):
        return [m.msg for m in run_checks(tags=["twilio_feedback"])]


def test_the_example_project_passes() -> None:
    assert _ids(**CREDENTIALS) == []
    assert _ids(deploy=True, **CREDENTIALS) == []


def test_missing_credentials() -> None:
    assert _ids(**NO_CREDENTIALS) == ["twilio_feedback.E002"]
    assert "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN" in _messages(**NO_CREDENTIALS)[0]


def test_credentials_from_the_environment_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", SID)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token")
    assert _ids(**NO_CREDENTIALS) == []


def test_unknown_keys_and_stray_settings() -> None:
    assert _ids(**CREDENTIALS, TWILIO_FEEDBACK={"STOR": "django://"}) == ["twilio_feedback.E001"]
    assert _ids(**CREDENTIALS, TWILIO_FEEDBACK_STORE="django://") == ["twilio_feedback.E001"]
    [message] = _messages(**CREDENTIALS, TWILIO_FEEDBACK={"STOR": "django://"})
    assert 'did you mean "STORE"?' in message


def test_values_that_cannot_work_even_without_credentials() -> None:
    feedback = {"STORE": "django://", "TOKEN_MAX_AGE": -1}
    assert _ids(**NO_CREDENTIALS, TWILIO_FEEDBACK=feedback) == [
        "twilio_feedback.E002",
        "twilio_feedback.E003",
    ]
    assert "token_max_age must be positive" in _messages(**CREDENTIALS, TWILIO_FEEDBACK=feedback)[0]


def test_a_django_store_on_a_database_that_cannot_hold_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _ids(**CREDENTIALS, TWILIO_FEEDBACK={"STORE": "django://nowhere"}) == [
        "twilio_feedback.E004"
    ]
    dummy = ConnectionHandler({"default": {"ENGINE": "django.db.backends.dummy"}})
    monkeypatch.setattr("twilio_feedback.django.store.connections", dummy)
    [message] = _messages(**CREDENTIALS, TWILIO_FEEDBACK={"STORE": "django://"})
    assert "runs on PostgreSQL and SQLite" in message


MEMORY = {**CREDENTIALS, "TWILIO_FEEDBACK": {"STORE": "memory://"}}


def test_memory_store_in_one_process_is_fine() -> None:
    assert _ids(**MEMORY) == []
    assert _ids(**CREDENTIALS, TWILIO_FEEDBACK={}) == []  # memory:// by default


@pytest.mark.parametrize(
    "variable", ["WEB_CONCURRENCY=4", "GUNICORN_CMD_ARGS=--workers 3", "UWSGI_PROCESSES=2"]
)
def test_memory_store_with_several_workers_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    name, value = variable.split("=")
    monkeypatch.setenv(name, value)
    assert _ids(**MEMORY) == ["twilio_feedback.W001"]
    assert _ids(**{**CREDENTIALS, "TWILIO_FEEDBACK": {"STORE": "django://"}}) == []


def test_one_web_worker_is_not_several(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    assert _ids(**MEMORY) == []


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("gunicorn.conf.py", "workers = 4\n"),
        ("uwsgi.ini", "[uwsgi]\nprocesses = 4\n"),
        ("Procfile", "web: gunicorn mysite.wsgi\n"),
    ],
)
def test_memory_store_beside_a_server_configuration(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_text(text)
    assert _ids(**MEMORY) == ["twilio_feedback.W001"]
    assert str(tmp_path / name) in _messages(**MEMORY)[0]


def test_a_procfile_without_a_multi_process_server(tmp_path: Path) -> None:
    (tmp_path / "Procfile").write_text("worker: python manage.py work\n")
    assert _ids(**MEMORY) == []


def test_server_configuration_in_base_dir(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "gunicorn.conf.py").write_text("workers = 4\n")
    assert _ids(**MEMORY, BASE_DIR=project) == ["twilio_feedback.W001"]


def test_memory_store_under_check_deploy() -> None:
    assert _ids(deploy=True, **MEMORY) == ["twilio_feedback.W001"]
