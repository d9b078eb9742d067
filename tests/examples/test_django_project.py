"""The example Django project's ``manage.py``: ``check`` and ``migrate`` on SQLite and
PostgreSQL, migrations that match the model, a misspelt setting that stops it at start-up,
and ``manage.py twilio_feedback`` run as an operator runs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .test_examples import DJANGO, DJANGO_SECRET_KEY, django_environment, manage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ACCOUNT_SID = "AC" + "0" * 32


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "DJANGO_"))}
    env.update(
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN="not-a-real-token",
        DJANGO_SECRET_KEY=DJANGO_SECRET_KEY,
        **extra,
    )
    return env


@pytest.mark.parametrize(
    "database", ["django-sqlite", pytest.param("django-postgres", marks=pytest.mark.postgres)]
)
def test_check_migrate_and_the_command_on_each_database(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = _env(django_environment(tmp_path, database, request))
    checked = manage("check", "--fail-level", "WARNING", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "System check identified no issues" in checked.stdout

    migrated = manage("migrate", env=env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert "Applying twilio_feedback.0001_initial... OK" in migrated.stdout

    status = manage("twilio_feedback", "status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "store      django://" in status.stdout
    assert "pending           0" in status.stdout

    again = manage("migrate", env=env)
    assert "No migrations to apply" in again.stdout


def test_the_migrations_match_the_model(tmp_path: Path) -> None:
    env = _env({"DJANGO_SQLITE_PATH": str(tmp_path / "db.sqlite3")})
    done = manage("makemigrations", "twilio_feedback", "--check", "--dry-run", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No changes detected" in done.stdout


def test_the_command_line_help_is_the_commands(tmp_path: Path) -> None:
    env = _env({"DJANGO_SQLITE_PATH": str(tmp_path / "db.sqlite3")})
    done = manage("twilio_feedback", "--help", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: manage.py twilio_feedback")
    for command in ("status", "drain", "retry-failed", "purge"):
        assert command in done.stdout
    missing = manage("twilio_feedback", "status", env={**env, "TWILIO_ACCOUNT_SID": ""})
    assert missing.returncode == 2
    assert "Twilio credentials are missing" in missing.stderr


def test_a_misspelt_setting_stops_the_project_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "typo_settings.py").write_text(
        'from mysite.settings import *  # noqa: F403\n\nTWILIO_FEEDBACK_STOR = "django://"\n'
    )
    env = _env(
        {
            "DJANGO_SQLITE_PATH": str(tmp_path / "db.sqlite3"),
            "DJANGO_SETTINGS_MODULE": "typo_settings",
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(DJANGO)]),
        }
    )
    for command in ("check", "migrate"):
        done = manage(command, env=env)
        assert done.returncode != 0
        assert "ImproperlyConfigured: TWILIO_FEEDBACK_STOR is not a Django setting" in done.stderr
        assert 'TWILIO_FEEDBACK = {"STORE": ...}' in done.stderr
