"""Settings: every knob in one validated, immutable object.

Build it directly, from environment variables (:meth:`Settings.from_env`) or from a
framework's configuration (:meth:`Settings.from_mapping`: Flask ``app.config``, Django
``settings``, a plain dict). Every mistake a user can make is refused here, at start-up,
with a message that says what to change; secrets never appear in ``repr()`` or in errors.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["ENV_PREFIX", "MIN_SECRET_KEY_LENGTH", "PathMatch", "Settings"]

ENV_PREFIX = "TWILIO_FEEDBACK_"
"""Prefix of every environment variable (and mapping key) this library reads."""
MIN_SECRET_KEY_LENGTH = 32
"""Shortest secret key accepted, in characters."""

PathMatch = Literal["exact", "prefix"]

ACCOUNT_SID_RE = re.compile(r"^AC[0-9a-fA-F]{32}$")
API_KEY_SID_RE = re.compile(r"^SK[0-9a-fA-F]{32}$")
_PARAM_RE = re.compile(r"^[A-Za-z0-9_.~-]{1,64}$")
_SECRET_FIELDS = frozenset({"auth_token", "api_key_secret", "secret_key"})
_DURATION_FIELDS = frozenset(
    {
        "token_max_age",
        "clock_skew",
        "request_timeout",
        "retry_window",
        "sweep_interval",
        "lease_seconds",
    }
)

# Twilio's own SDK variable names, read before the TWILIO_FEEDBACK_* ones.
_TWILIO_ALIASES = {
    "account_sid": ("TWILIO_ACCOUNT_SID",),
    "auth_token": ("TWILIO_AUTH_TOKEN",),
    "api_key_sid": ("TWILIO_API_KEY", "TWILIO_API_KEY_SID"),
    "api_key_secret": ("TWILIO_API_SECRET", "TWILIO_API_KEY_SECRET"),
}

Duration = float | int | timedelta


def _seconds(name: str, value: Duration | str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a number of seconds or a timedelta")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{name} must be a number of seconds or a timedelta, not {value!r}"
        ) from None


def _str_tuple(value: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


@dataclass(frozen=True)
class Settings:
    """Configuration of a :class:`~twilio_feedback.FeedbackTracker`.

    Credentials are an account SID with its auth token, or with an API key
    (``api_key_sid`` / ``api_key_secret``). ``secret_key`` signs tracking tokens: one key,
    or a list ordered oldest to newest for rotation (the newest signs, all verify). Durations
    accept seconds or a :class:`~datetime.timedelta`.
    """

    account_sid: str | None = None
    """Twilio account SID (``AC`` + 32 hex). Env: ``TWILIO_ACCOUNT_SID``."""
    auth_token: str | None = None
    """Twilio auth token. Env: ``TWILIO_AUTH_TOKEN``."""
    api_key_sid: str | None = None
    """Twilio API key SID (``SK`` + 32 hex), instead of the auth token. Env: ``TWILIO_API_KEY``."""
    api_key_secret: str | None = None
    """The API key's secret. Env: ``TWILIO_API_SECRET``."""
    secret_key: str | Sequence[str] | None = None
    """Token signing key(s), at least 32 characters each, oldest to newest."""
    store: str | Store = "memory://"
    """A store URL (``memory://``, ``sqlite:///f.db``, ``postgresql+psycopg://...``,
    ``redis://...``) or a :class:`~twilio_feedback.stores.Store` instance."""
    confirm_paths: tuple[str, ...] = ("/confirm",)
    """Paths the middleware treats as confirm links (comma list in the environment)."""
    path_match: PathMatch = "exact"
    """``exact`` or ``prefix`` matching of ``confirm_paths``."""
    confirm_methods: tuple[str, ...] = ("GET", "POST")
    """Methods that may confirm. HEAD and OPTIONS never do, whatever this says."""
    token_param: str = "id"
    """Query parameter (or POST form field) that carries the token."""
    token_max_age: float = 7 * 24 * 3600.0
    """How long a link counts, in seconds. Long on purpose: a late click is still real."""
    api_base_url: str = "https://api.twilio.com"
    """Base URL of the Twilio API, or of any compatible server (tests, proxies)."""
    salt: str = "twilio-feedback.token"
    """Separates these tokens from anything else signed with the same secret."""
    clock_skew: float = 60.0
    """Tolerated clock difference between hosts sharing a store, in seconds."""
    request_timeout: float = 10.0
    """Timeout of every call to Twilio, in seconds."""
    reporter_concurrency: int = 4
    """Feedback posts in flight at once, per process."""
    queue_size: int = 10_000
    """Confirmations waiting in memory; past it they wait in the store for the sweep."""
    retry_window: float = 24 * 3600.0
    """How long a transiently failing report is retried before it is marked failed."""
    sweep_interval: float = 30.0
    """How often the outbox sweep looks for unreported confirmations, in seconds."""
    lease_seconds: float = 60.0
    """How long one process owns a record it is reporting before others may take it."""
    bot_user_agents: tuple[str, ...] = ()
    """Extra user-agent regular expressions of link-preview bots and scanners."""
    default_bot_list: bool = True
    """Whether to use the maintained list of crawler user agents as well."""
    confirmed_redirect: str | None = None
    """If set, the middleware answers a confirming request itself with a redirect here."""
    invalid_redirect: str | None = None
    """Redirect target for invalid, unknown and error results (with ``confirmed_redirect``)."""
    expired_redirect: str | None = None
    """Redirect target for expired links (defaults to ``invalid_redirect``)."""
    hide_token: bool = False
    """Remove the token parameter from the query string the wrapped app sees."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in _DURATION_FIELDS:
            set_(self, name, _seconds(name, getattr(self, name)))
        for name in ("confirm_paths", "confirm_methods", "bot_user_agents"):
            set_(self, name, _str_tuple(getattr(self, name)))
        set_(self, "confirm_methods", tuple(m.upper() for m in self.confirm_methods))
        for name in ("reporter_concurrency", "queue_size"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigurationError(f"{name} must be an integer, not {value!r}") from None
                set_(self, name, value)
        for name in ("default_bot_list", "hide_token"):
            set_(self, name, _bool(name, getattr(self, name)))
        if isinstance(self.secret_key, str) and "," in self.secret_key:
            set_(self, "secret_key", _str_tuple(self.secret_key))
        elif self.secret_key is not None and not isinstance(self.secret_key, str):
            set_(self, "secret_key", tuple(self.secret_key))
        self._validate()

    def _validate(self) -> None:
        if not self.account_sid:
            raise ConfigurationError(
                "account_sid is missing: set it, or TWILIO_ACCOUNT_SID in the environment"
            )
        if not ACCOUNT_SID_RE.match(self.account_sid):
            raise ConfigurationError(
                f"account_sid {self.account_sid[:40]!r} is not a Twilio account SID "
                "('AC' followed by 32 hex digits); find it in the Twilio Console"
            )
        if self.api_key_sid or self.api_key_secret:
            if not (self.api_key_sid and self.api_key_secret):
                raise ConfigurationError(
                    "api_key_sid and api_key_secret go together: set both "
                    "(TWILIO_API_KEY and TWILIO_API_SECRET), or use auth_token instead"
                )
            if not API_KEY_SID_RE.match(self.api_key_sid):
                raise ConfigurationError(
                    "api_key_sid is not a Twilio API key SID ('SK' followed by 32 hex digits)"
                )
        elif not self.auth_token:
            raise ConfigurationError(
                "Twilio credentials are missing: set auth_token (TWILIO_AUTH_TOKEN), or "
                "api_key_sid and api_key_secret (TWILIO_API_KEY, TWILIO_API_SECRET)"
            )
        keys = self.secret_keys
        if not keys:
            raise ConfigurationError(
                "secret_key is missing: set it (TWILIO_FEEDBACK_SECRET_KEY) to a random "
                f"string of at least {MIN_SECRET_KEY_LENGTH} characters, e.g. the output of "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        for position, key in enumerate(keys):
            if len(key) < MIN_SECRET_KEY_LENGTH:
                which = "secret_key" if len(keys) == 1 else f"secret_key #{position + 1}"
                raise ConfigurationError(
                    f"{which} is {len(key)} characters; use at least "
                    f"{MIN_SECRET_KEY_LENGTH} random characters "
                    "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        if isinstance(self.store, str):
            from .stores.base import is_known_scheme, registered_schemes

            if not is_known_scheme(self.store):
                known = ", ".join(f"{s}://" for s in registered_schemes())
                scheme = urlsplit(self.store).scheme or self.store[:20]
                raise ConfigurationError(
                    f"store scheme {scheme!r} is unknown; use one of {known} "
                    "or pass a Store instance"
                )
        if not self.confirm_paths:
            raise ConfigurationError("confirm_paths is empty: give at least one path")
        for path in self.confirm_paths:
            if not path.startswith("/"):
                raise ConfigurationError(
                    f"confirm path {path!r} must start with '/' (for example '/{path}')"
                )
        if self.path_match not in get_args(PathMatch):
            raise ConfigurationError(
                f"path_match must be 'exact' or 'prefix', not {self.path_match!r}"
            )
        for method in self.confirm_methods:
            if not method.isalpha():
                raise ConfigurationError(f"confirm method {method!r} is not an HTTP method")
        if not _PARAM_RE.match(self.token_param):
            raise ConfigurationError(
                f"token_param {self.token_param!r} must be 1-64 URL-safe characters"
            )
        parts = urlsplit(self.api_base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"api_base_url {self.api_base_url!r} must be an http(s) URL such as "
                "https://api.twilio.com"
            )
        for name in _DURATION_FIELDS - {"clock_skew"}:
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.clock_skew < 0:
            raise ConfigurationError("clock_skew must not be negative")
        for name in ("reporter_concurrency", "queue_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer")
        for name in ("confirmed_redirect", "invalid_redirect", "expired_redirect"):
            target = getattr(self, name)
            if target is not None and not (target.startswith("/") and not target.startswith("//")):
                parts = urlsplit(target)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise ConfigurationError(
                        f"{name} must be a local path like '/welcome' or an absolute "
                        f"http(s) URL, not {target!r}"
                    )
        for pattern in self.bot_user_agents:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigurationError(
                    f"bot_user_agents pattern {pattern!r} is not a regular expression: {exc}"
                ) from None

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """The signing keys, oldest to newest."""
        if self.secret_key is None:
            return ()
        if isinstance(self.secret_key, str):
            return (self.secret_key,) if self.secret_key else ()
        return tuple(self.secret_key)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value:
                parts.append(f"{f.name}='***'")
            elif f.name == "store" and isinstance(value, str):
                parts.append(f"store={_redact_url(value)!r}")
            else:
                parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @classmethod
    def env_names(cls) -> dict[str, tuple[str, ...]]:
        """For each field, the environment variables (or mapping keys) read, in order."""
        return {
            f.name: (*_TWILIO_ALIASES.get(f.name, ()), ENV_PREFIX + f.name.upper())
            for f in dataclasses.fields(cls)
        }

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | Any, **overrides: Any) -> Settings:
        """Build from a mapping or settings object (Flask ``app.config``, Django ``settings``).

        Reads the same names as :meth:`from_env` (``TWILIO_ACCOUNT_SID``,
        ``TWILIO_FEEDBACK_SECRET_KEY``, ...) and, in a plain mapping, the field names
        themselves. Values may be typed (lists, timedeltas) or strings.
        ``overrides`` win over the mapping.
        """

        def lookup(name: str) -> Any:
            if isinstance(mapping, Mapping):
                return mapping.get(name)
            return getattr(mapping, name, None)

        values: dict[str, Any] = {}
        for name, keys in cls.env_names().items():
            for key in (*keys, name) if isinstance(mapping, Mapping) else keys:
                value = lookup(key)
                if value is not None and value != "":
                    values[name] = value
                    break
        if isinstance(mapping, Mapping):
            _refuse_unknown(mapping.keys())
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build from environment variables: ``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``
        (or ``TWILIO_API_KEY`` / ``TWILIO_API_SECRET``), and one ``TWILIO_FEEDBACK_<FIELD>``
        per field, e.g. ``TWILIO_FEEDBACK_SECRET_KEY``, ``TWILIO_FEEDBACK_STORE``,
        ``TWILIO_FEEDBACK_CONFIRM_PATHS=/confirm,/verify``. A misspelt
        ``TWILIO_FEEDBACK_*`` name is an error, not silently ignored."""
        env = os.environ if environ is None else environ
        known = {key for keys in cls.env_names().values() for key in keys}
        return cls.from_mapping(
            {k: v for k, v in env.items() if k in known or k.startswith(ENV_PREFIX)}, **overrides
        )


def _refuse_unknown(keys: Any) -> None:
    fields = {f.name.upper() for f in dataclasses.fields(Settings)}
    for key in keys:
        unknown = isinstance(key, str) and key.startswith(ENV_PREFIX)
        if unknown and key[len(ENV_PREFIX) :] not in fields:
            raise ConfigurationError(
                f"{key} is not a twilio-feedback setting; known settings are "
                + ", ".join(sorted(ENV_PREFIX + name for name in fields))
            )


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url
