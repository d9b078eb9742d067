"""Django, configured once for the tests of this directory from the example project's
settings (the quickstart's app, middleware, settings dict, URLs and views), on a SQLite
file and, where PostgreSQL is installed, a second database (alias ``pg``) on the session's
server. Both are migrated with the app's shipped migrations."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from twilio_feedback.testing import FakeTwilio

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
PG = "pg"
"""The alias of the PostgreSQL database, when there is one."""

# Django's test client sends no User-Agent, which the maintained bot list treats as a
# bot. Until the count_test_clients setting lands (TWILIO_FEEDBACK = {"COUNT_TEST_CLIENTS":
# True}), the tests send a browser's.
BROWSER = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


def postgres_settings(url: str) -> dict[str, Any]:
    """A ``DATABASES`` entry for a ``postgresql://user@host:port/name`` URL."""
    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


def example_settings() -> dict[str, Any]:
    """The example project's settings module, as ``settings.configure()`` arguments."""
    if str(PROJECT) not in sys.path:
        sys.path.insert(0, str(PROJECT))
    module = importlib.import_module("mysite.settings")
    return {name: getattr(module, name) for name in dir(module) if name.isupper()}


@pytest.fixture(scope="session", autouse=True)
def django_project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Configure Django (once per process) and migrate its databases."""
    from django.conf import settings
    from django.core.management import call_command

    import django

    if settings.configured:
        return dict(settings.DATABASES)
    sqlite_options: dict[str, Any] = {"timeout": 30}
    if django.VERSION >= (5, 1):
        # As the quickstart advises: without it, every write waits for an fsync.
        sqlite_options["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    databases: dict[str, Any] = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
            "OPTIONS": sqlite_options,
        }
    }
    try:
        server = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception:
        server = None
    if server is not None:
        databases[PG] = postgres_settings(server.fresh_database())
    values = example_settings()
    values.update(DATABASES=databases, ALLOWED_HOSTS=["testserver", *values["ALLOWED_HOSTS"]])
    settings.configure(**values)
    django.setup()
    for alias in databases:
        call_command("migrate", database=alias, verbosity=0)
    return databases


def needs_postgres(databases: dict[str, Any]) -> None:
    if PG not in databases:
        pytest.skip("PostgreSQL is not installed")


def clear(alias: str = "default") -> None:
    """Empty the store's tables (the insights' one where migrations made it)."""
    from django.db import connections

    from twilio_feedback.django.store import DAILY_TABLE, TABLE

    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")
        if DAILY_TABLE in connection.introspection.table_names(cursor):
            cursor.execute(f"DELETE FROM {DAILY_TABLE}")


@pytest.fixture
def on_emulator(fake_twilio: FakeTwilio) -> Iterator[Callable[..., Any]]:
    """The project's settings with the emulator's credentials and URL (and an empty
    store): a function giving ``override_settings`` for more changes to the dict."""
    from django.conf import settings
    from django.test import override_settings

    base = dict(settings.TWILIO_FEEDBACK)

    def configured(**feedback: Any) -> Any:
        return override_settings(
            TWILIO_ACCOUNT_SID=fake_twilio.account_sid,
            TWILIO_AUTH_TOKEN=fake_twilio.auth_token,
            TWILIO_PHONE_NUMBER="+15017122661",
            TWILIO_FEEDBACK={**base, "API_BASE_URL": fake_twilio.base_url, **feedback},
        )

    clear()
    with configured():
        yield configured
