"""System checks (``python manage.py check``), tagged ``twilio_feedback``.

- ``twilio_feedback.E001``: ``TWILIO_FEEDBACK`` cannot be read (not a dict, an unknown
  key, or a stray ``TWILIO_FEEDBACK_*`` setting);
- ``twilio_feedback.E002``: the Twilio credentials are missing;
- ``twilio_feedback.E003``: a setting has a value that cannot work;
- ``twilio_feedback.E004``: the ``django://`` store cannot use its database;
- ``twilio_feedback.W001``: ``memory://`` where the project looks multi-process.

W001 is a guess, made from what can be seen without running the server: the store is
``memory://`` and either ``check --deploy`` runs (a production configuration), or one of
these says several processes will serve the project: ``WEB_CONCURRENCY`` above 1 (read by
gunicorn, uvicorn and most platforms), ``GUNICORN_CMD_ARGS``, ``UWSGI_PROCESSES`` or
``UWSGI_WORKERS`` above 1, or a ``gunicorn.conf.py``, ``uwsgi.ini`` (``.yaml``,
``.yml``), or a ``Procfile`` naming gunicorn or uwsgi, in the working directory or
``BASE_DIR``. Silence any of them with ``SILENCED_SYSTEM_CHECKS``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings as django_settings
from django.core import checks
from django.core.checks import CheckMessage, Error
from django.core.exceptions import ImproperlyConfigured

from ..errors import ConfigurationError
from ..settings import Settings
from .conf import SETTING, missing_credentials, settings_values

__all__ = [
    "SERVER_CONFIG_FILES",
    "check_memory_store",
    "check_memory_store_deploy",
    "check_settings",
    "multi_process_hints",
]

SERVER_CONFIG_FILES = ("gunicorn.conf.py", "uwsgi.ini", "uwsgi.yaml", "uwsgi.yml")
"""Files whose presence (in the working directory or ``BASE_DIR``) says a multi-process
server runs the project."""
_PLACEHOLDER_CREDENTIALS = {"account_sid": "AC" + "0" * 32, "auth_token": "placeholder"}
_MEMORY_HINT = (
    'Set TWILIO_FEEDBACK["STORE"] to "django://" (this project\'s database; run migrate), '
    "or to a redis:// URL"
)


def _values() -> dict[str, Any] | Error:
    try:
        return settings_values()
    except ImproperlyConfigured as exc:
        return Error(str(exc), id="twilio_feedback.E001")


def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """E001-E004: the settings make a tracker that can start."""
    values = _values()
    if isinstance(values, Error):
        return [values]
    found: list[CheckMessage] = []
    missing = missing_credentials(values)
    if missing:
        found.append(
            Error(
                missing,
                hint="Tests too need credentials: the emulator's (FakeTwilio) will do.",
                id="twilio_feedback.E002",
            )
        )
        # The other settings are still checked, with credentials that pass.
        values = {**values, **_PLACEHOLDER_CREDENTIALS}
    try:
        settings = Settings(**values)
    except ConfigurationError as exc:
        found.append(Error(f"{SETTING}: {exc}", id="twilio_feedback.E003"))
        return found
    if isinstance(settings.store, str) and settings.store.lower().startswith("django:"):
        from .store import DjangoStore

        try:
            DjangoStore.from_url(settings.store)
        except ConfigurationError as exc:
            found.append(Error(str(exc), id="twilio_feedback.E004"))
    return found


def _memory(values: dict[str, Any] | Error) -> bool:
    if isinstance(values, Error):
        return False
    store = values.get("store", "memory://")
    return isinstance(store, str) and store.lower().startswith("memory:")


def _number(name: str) -> int:
    try:
        return int(os.environ.get(name, ""))
    except ValueError:
        return 0


def multi_process_hints() -> list[str]:
    """What says several processes will serve this project (see the module's doc)."""
    hints = []
    for name in ("WEB_CONCURRENCY", "UWSGI_PROCESSES", "UWSGI_WORKERS"):
        if _number(name) > 1:
            hints.append(f"{name}={_number(name)}")
    if os.environ.get("GUNICORN_CMD_ARGS"):
        hints.append("GUNICORN_CMD_ARGS is set")
    places = [Path.cwd()]
    base = getattr(django_settings, "BASE_DIR", None)
    if base:
        places.append(Path(base))
    for place in dict.fromkeys(places):
        for name in SERVER_CONFIG_FILES:
            if (place / name).is_file():
                hints.append(f"{place / name} exists")
        procfile = place / "Procfile"
        try:
            text = procfile.read_text(errors="replace")[:10_000] if procfile.is_file() else ""
        except OSError:
            text = ""
        if "gunicorn" in text or "uwsgi" in text:
            hints.append(f"{procfile} runs gunicorn or uwsgi")
    return hints


def check_memory_store(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W001: ``memory://`` while the project looks multi-process."""
    if not _memory(_values()):
        return []
    hints = multi_process_hints()
    if not hints:
        return []
    return [
        checks.Warning(
            "The twilio-feedback store is memory://, which each process keeps to itself, "
            f"and this project looks served by several processes ({'; '.join(hints)}): a "
            "link sent by one process is unknown to the others, and confirmations not yet "
            "reported are lost on restart.",
            hint=_MEMORY_HINT,
            id="twilio_feedback.W001",
        )
    ]


def check_memory_store_deploy(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W001 under ``check --deploy``: ``memory://`` in a production configuration."""
    if not _memory(_values()) or multi_process_hints():  # the other check says it
        return []
    return [
        checks.Warning(
            "The twilio-feedback store is memory://: confirmations not yet reported are "
            "lost on restart, and processes do not share links.",
            hint=_MEMORY_HINT,
            id="twilio_feedback.W001",
        )
    ]
