"""Django settings in, :class:`~twilio_feedback.Settings` and the process's tracker out.

Every setting goes in one dict, the Django REST framework convention::

    TWILIO_FEEDBACK = {
        "STORE": "django://",
        "CONFIRM_PATHS": ["/confirm"],
    }

Its keys are the :class:`~twilio_feedback.Settings` fields in upper case. The Twilio
credentials may also come from the ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN`` (or
``TWILIO_API_KEY`` and ``TWILIO_API_SECRET``) Django settings, or else from the
environment. Without ``SECRET_KEY`` in the dict, the token signing keys are derived from
Django's ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``
(:func:`~twilio_feedback.tokens.derive_key`, the rule the Flask extension uses too).

Settings are read on first use and read again when a test changes them
(``override_settings`` sends ``setting_changed``); the tracker is then rebuilt.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import threading
from collections.abc import Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from ..errors import ConfigurationError
from ..settings import ENV_PREFIX, Settings
from ..tokens import derive_key
from ..tracker import FeedbackTracker

__all__ = [
    "CREDENTIAL_SETTINGS",
    "SETTING",
    "get_settings",
    "get_tracker",
    "missing_credentials",
    "reset",
    "settings_values",
    "valid_keys",
    "validate_names",
]

SETTING = "TWILIO_FEEDBACK"
"""The Django setting that holds this library's settings, as a dict."""
CREDENTIAL_SETTINGS: dict[str, tuple[str, ...]] = {
    name: tuple(key for key in keys if not key.startswith(ENV_PREFIX))
    for name, keys in Settings.env_names().items()
    if any(not key.startswith(ENV_PREFIX) for key in keys)
}
"""For each credential field, the Django settings (and environment variables) read when
the dict does not set it: ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, ``TWILIO_API_KEY``
(or ``TWILIO_API_KEY_SID``), ``TWILIO_API_SECRET`` (or ``TWILIO_API_KEY_SECRET``)."""
WATCHED = frozenset(
    {SETTING, "SECRET_KEY", "SECRET_KEY_FALLBACKS", "DATABASES"}
    | {name for names in CREDENTIAL_SETTINGS.values() for name in names}
)
"""Django settings whose change (in a test) rebuilds the settings and the tracker."""

_lock = threading.RLock()
_settings: Settings | None = None
_tracker: FeedbackTracker | None = None


def valid_keys() -> tuple[str, ...]:
    """The keys ``TWILIO_FEEDBACK`` accepts: every Settings field, in upper case."""
    return tuple(field.name.upper() for field in dataclasses.fields(Settings))


def _closest(name: str) -> str | None:
    keys = valid_keys()
    upper = name.upper()
    for candidate in (upper, upper.removeprefix(ENV_PREFIX), upper.removeprefix("TWILIO_")):
        if candidate in keys:
            return candidate
    found = difflib.get_close_matches(upper, keys, n=1, cutoff=0.6)
    return found[0] if found else None


def validate_names() -> None:
    """Refuse what would otherwise be silently ignored: an unknown key in
    ``TWILIO_FEEDBACK``, and a ``TWILIO_FEEDBACK_*`` Django setting (a misspelt name, or a
    setting that belongs in the dict). Raises ``ImproperlyConfigured`` naming the closest
    valid key. Runs when Django starts (the app's ``ready()``)."""
    user = getattr(django_settings, SETTING, {})
    if not isinstance(user, Mapping):
        raise ImproperlyConfigured(
            f"{SETTING} must be a dict of settings, such as "
            f'{SETTING} = {{"STORE": "django://"}}, not a {type(user).__name__}'
        )
    keys = valid_keys()
    for key in user:
        if isinstance(key, str) and key in keys:
            continue
        closest = _closest(key) if isinstance(key, str) else None
        hint = f'; did you mean "{closest}"?' if closest else "."
        raise ImproperlyConfigured(
            f"{SETTING} has an unknown key {key!r}{hint} The keys are the settings of "
            f"twilio-feedback in upper case: {', '.join(keys)}"
        )
    for name in dir(django_settings):
        if name.startswith(ENV_PREFIX):
            closest = _closest(name[len(ENV_PREFIX) :]) or "STORE"
            raise ImproperlyConfigured(
                f"{name} is not a Django setting of twilio-feedback: its settings go in one "
                f'dict, e.g. {SETTING} = {{"{closest}": ...}}'
            )


def _derived_keys() -> tuple[str, ...]:
    # Oldest to newest, the newest signing: the fallbacks, then SECRET_KEY.
    secrets = [*getattr(django_settings, "SECRET_KEY_FALLBACKS", ()), django_settings.SECRET_KEY]
    keys: list[str] = []
    for secret in secrets:
        key = derive_key(secret)
        if key in keys:
            keys.remove(key)
        keys.append(key)
    return tuple(keys)


def _lookup(name: str) -> Any:
    value = getattr(django_settings, name, None)
    if value is None or value == "":
        value = os.environ.get(name) or None
    return value


def settings_values() -> dict[str, Any]:
    """The Settings fields the Django settings give, before validation."""
    validate_names()
    values = {key.lower(): value for key, value in getattr(django_settings, SETTING, {}).items()}
    for name, sources in CREDENTIAL_SETTINGS.items():
        if values.get(name) in (None, ""):
            values.pop(name, None)
            for source in sources:
                found = _lookup(source)
                if found is not None:
                    values[name] = found
                    break
    if values.get("secret_key") in (None, ""):
        values["secret_key"] = _derived_keys()
    return values


def missing_credentials(values: Mapping[str, Any]) -> str | None:
    """What is missing of the Twilio credentials in ``values`` (from
    :func:`settings_values`), as a sentence; ``None`` when they are complete."""
    if values.get("account_sid") and (
        values.get("auth_token") or (values.get("api_key_sid") and values.get("api_key_secret"))
    ):
        return None
    return (
        "Twilio credentials are missing: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or "
        "TWILIO_API_KEY and TWILIO_API_SECRET) in settings.py or in the environment"
    )


def _build() -> Settings:
    values = settings_values()
    missing = missing_credentials(values)
    if missing:
        raise ImproperlyConfigured(missing)
    try:
        return Settings(**values)
    except ConfigurationError as exc:
        raise ImproperlyConfigured(f"{SETTING}: {exc}") from None


def get_settings() -> Settings:
    """The :class:`~twilio_feedback.Settings` the Django settings make (built once, and
    again after a test changes them). Raises ``ImproperlyConfigured`` with what to
    change."""
    global _settings
    settings = _settings
    if settings is None:
        with _lock:
            settings = _settings
            if settings is None:
                settings = _settings = _build()
    return settings


def get_tracker() -> FeedbackTracker:
    """The process's :class:`~twilio_feedback.FeedbackTracker`, built on first use from
    the Django settings (thread-safe, once) and closed when the interpreter exits.

    A test that changes the settings (``override_settings``) gets a new one; the old one
    is closed.
    """
    global _tracker
    tracker = _tracker
    if tracker is None:
        with _lock:
            tracker = _tracker
            if tracker is None:
                tracker = _tracker = FeedbackTracker(get_settings())
    return tracker


def reset() -> None:
    """Forget the settings and close the tracker; the next use builds them again."""
    global _settings, _tracker
    with _lock:
        tracker, _tracker, _settings = _tracker, None, None
    if tracker is not None:
        tracker.close()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in WATCHED or setting.startswith(ENV_PREFIX):
        reset()


setting_changed.connect(_setting_changed, dispatch_uid="twilio_feedback.django.conf")
