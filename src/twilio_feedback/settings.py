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
from urllib.parse import unquote, unquote_plus, urlsplit

from .errors import ConfigurationError
from .tokens import DEFAULT_SALT

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = [
    "DEFAULT_API_BASE_URL",
    "ENV_PREFIX",
    "MIN_SECRET_KEY_LENGTH",
    "SECRET_PARAM_WORDS",
    "PathMatch",
    "ReporterMode",
    "Settings",
    "keep_seconds",
    "redact_text",
    "redact_url",
    "safe_excerpt",
]

ENV_PREFIX = "TWILIO_FEEDBACK_"
"""Prefix of every environment variable (and mapping key) this library reads."""
MIN_SECRET_KEY_LENGTH = 32
"""Shortest secret key accepted, in characters."""
DEFAULT_API_BASE_URL = "https://api.twilio.com"
"""Twilio's own API: the default ``api_base_url``."""

PathMatch = Literal["exact", "prefix"]
ReporterMode = Literal["thread", "off", "celery"]

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

SECRET_PARAM_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")
"""A URL query parameter whose name contains one of these (in any case: ``password``,
``passwd``, ``pwd``, ``client_secret``, ``token``, ``api_key``, ``sslkey``, ``auth``, ...)
has its value masked by :func:`redact_url`."""
MASK = "***"
_URL_IN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_EXCERPT_LENGTH = 8


def _secret_param(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_PARAM_WORDS)


def redact_url(url: str) -> str:
    """``url`` with its password (``user:password@``) and the values of password-like
    query parameters (:data:`SECRET_PARAM_WORDS`) replaced by ``***``. The one redaction
    rule of the library: ``repr(Settings)``, errors and the command line all use it."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    redacted = url
    if password:
        host = parts.netloc.rsplit("@", 1)[1]
        netloc = f"{parts.username or ''}:{MASK}@{host}"
        redacted = redacted.replace(f"//{parts.netloc}", f"//{netloc}", 1)
    # By hand rather than urlunsplit, which rewrites some URLs (sqlite:///f.db).
    rest, hash_, fragment = redacted.partition("#")
    head, question, query = rest.partition("?")
    if query:
        pieces = []
        for piece in query.split("&"):
            name, sep, _ = piece.partition("=")
            pieces.append(f"{name}={MASK}" if sep and _secret_param(unquote_plus(name)) else piece)
        redacted = f"{head}{question}{'&'.join(pieces)}{hash_}{fragment}"
    return redacted


def _url_secrets(url: str) -> set[str]:
    try:
        parts = urlsplit(url)
        found = {parts.password} if parts.password else set()
    except ValueError:
        return set()
    for piece in parts.query.split("&"):
        name, sep, value = piece.partition("=")
        if sep and value and _secret_param(unquote_plus(name)):
            found.add(value)
    # Drivers quote what they were given decoded: mask both spellings.
    return found | {unquote(value) for value in found} | {unquote_plus(v) for v in found}


def redact_text(text: str, url: str | None = None) -> str:
    """``text`` (an error message, a traceback, a ``repr``) with every URL in it passed
    through :func:`redact_url`, and the secrets of ``url`` masked wherever they appear
    on their own (a driver's message may quote a password without its URL)."""

    def one(match: re.Match[str]) -> str:
        found = match.group()
        url_part = found.rstrip(".,;:!?)]}")  # punctuation around a URL in prose
        return redact_url(url_part) + found[len(url_part) :]

    text = _URL_IN_TEXT_RE.sub(one, text)
    if url:
        for secret in sorted(_url_secrets(url), key=len, reverse=True):
            text = text.replace(secret, MASK)
    return text


def safe_excerpt(value: object) -> str:
    """``value`` as an error message may show it: a short one (up to 8 characters) as it
    is, a longer one (perhaps a secret pasted into the wrong field) by its first 2
    characters and its length."""
    text = str(value)
    if len(text) <= _EXCERPT_LENGTH:
        return repr(text)
    return f"{text[:2]!r}... ({len(text)} characters)"


def _seconds(name: str, value: Duration | str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ConfigurationError(f"{name} must be a number of seconds or a timedelta")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{name} must be a number of seconds or a timedelta, not {safe_excerpt(value)}"
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
    raise ConfigurationError(f"{name} must be true or false, not {safe_excerpt(value)}")


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
    """Token signing key, at least 32 characters; several keys (rotation) as a list, oldest
    to newest. In the environment, several keys are separated by spaces. A comma in a key
    is refused: it used to separate keys."""
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
    api_base_url: str = DEFAULT_API_BASE_URL
    """Base URL of the Twilio API, or of any compatible server (tests, proxies)."""
    salt: str = DEFAULT_SALT
    """Separates these tokens from anything else signed with the same secret."""
    clock_skew: float = 60.0
    """Tolerated clock difference between hosts sharing a store, in seconds."""
    request_timeout: float = 10.0
    """Timeout of every call to Twilio, in seconds."""
    reporter_concurrency: int = 4
    """Feedback posts in flight at once, per process."""
    queue_size: int = 10_000
    """Confirmations waiting in memory; past it they wait in the store for the sweep."""
    deferred_size: int = 10_000
    """Confirmations kept in memory while the store cannot be reached (answered
    ``deferred``, applied once it answers); past it they are answered ``error``. 0 keeps
    none."""
    retry_window: float = 24 * 3600.0
    """How long a transiently failing report is retried before it is marked failed."""
    sweep_interval: float = 10.0
    """How often the outbox sweep looks for unreported confirmations, in seconds. A dead
    process's confirmations are reported within ``lease_seconds + sweep_interval`` (25 s)
    of its death, plus the post itself."""
    lease_seconds: float = 15.0
    """How long a record's lease lasts, in seconds. A live process renews the leases of the
    records it holds every ``lease_seconds / 3`` (one store call for all), so a slow
    process keeps its own; a dead one's end at most this long after its death."""
    bot_user_agents: tuple[str, ...] = ()
    """Extra user-agent regular expressions of link-preview bots and scanners."""
    default_bot_list: bool = True
    """Whether to use the maintained list of crawler user agents as well."""
    count_test_clients: bool = False
    """For an app's own tests only: count the framework test clients as people (no user
    agent, as Django's sends; ``testclient``, ``Werkzeug/...``, ``Quart``,
    ``python-httpx/...``, ``python-requests/...``, ``curl/...``, ``aiohttp``), so a test
    can confirm a link. Never in production: anyone can send these user agents."""
    confirmed_redirect: str | None = None
    """If set, the middleware answers a confirming request itself with a redirect here."""
    invalid_redirect: str | None = None
    """Redirect target for invalid, unknown and error results (with ``confirmed_redirect``)."""
    expired_redirect: str | None = None
    """Redirect target for expired links (defaults to ``invalid_redirect``)."""
    hide_token: bool = False
    """Remove the token parameter from the query string the wrapped app sees."""
    insights: bool = True
    """Whether to keep conversion insights: each record carries its message's destination
    country and sender, and the store counts messages sent, confirmed, reported and
    failed per day, country and sender (``tracker.insights()``, ``twilio-feedback
    report``). Off, new messages are counted nowhere; figures already kept stay."""
    reporter: ReporterMode = "thread"
    """Who delivers reports to Twilio. ``thread``: background threads in this process.
    ``off``: nobody here; confirmations wait in the store for ``twilio-feedback worker``,
    a scheduled ``drain`` or ``tracker.drain()``, and the tracker starts no threads at
    all (serverless; a dedicated delivery process). ``celery``: each confirmation
    enqueues a Celery task (:mod:`twilio_feedback.celery`). See Deployment."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in _DURATION_FIELDS:
            set_(self, name, _seconds(name, getattr(self, name)))
        for name in ("confirm_paths", "confirm_methods", "bot_user_agents"):
            set_(self, name, _str_tuple(getattr(self, name)))
        set_(self, "confirm_methods", tuple(m.upper() for m in self.confirm_methods))
        for name in ("reporter_concurrency", "queue_size", "deferred_size"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = int(value)
                except ValueError:
                    raise ConfigurationError(
                        f"{name} must be an integer, not {safe_excerpt(value)}"
                    ) from None
                set_(self, name, value)
        for name in ("default_bot_list", "count_test_clients", "hide_token", "insights"):
            set_(self, name, _bool(name, getattr(self, name)))
        if isinstance(self.reporter, str):
            set_(self, "reporter", self.reporter.strip().lower())
        if self.secret_key is not None and not isinstance(self.secret_key, str):
            set_(self, "secret_key", tuple(self.secret_key))
        self._validate()

    def _validate(self) -> None:
        if not self.account_sid:
            raise ConfigurationError(
                "account_sid is missing: set it, or TWILIO_ACCOUNT_SID in the environment"
            )
        if not ACCOUNT_SID_RE.match(self.account_sid):
            raise ConfigurationError(
                f"account_sid {safe_excerpt(self.account_sid)} is not a Twilio account SID "
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
            which = "secret_key" if len(keys) == 1 else f"secret_key #{position + 1}"
            if not isinstance(key, str):
                raise ConfigurationError(
                    f"{which} is a {type(key).__name__}; give each key as a str"
                )
            if "," in key:
                # A comma used to split one string into several keys: say so, never guess.
                raise ConfigurationError(
                    f"{which} contains a comma, which a key made as advised "
                    "(secrets.token_urlsafe(32)) never does. To give several keys (rotation), "
                    "pass a list, oldest first: secret_key=[old, new]; in "
                    "TWILIO_FEEDBACK_SECRET_KEY (or a from_mapping() string), separate them "
                    "with spaces"
                )
            if len(key) < MIN_SECRET_KEY_LENGTH:
                raise ConfigurationError(
                    f"{which} is {len(key)} characters; use at least "
                    f"{MIN_SECRET_KEY_LENGTH} random characters "
                    "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
        if isinstance(self.store, str):
            from .stores.base import is_known_scheme, registered_schemes

            if not is_known_scheme(self.store):
                known = ", ".join(f"{s}://" for s in registered_schemes())
                if "://" not in self.store:
                    raise ConfigurationError(
                        f"store {safe_excerpt(self.store)} is not a URL; use one of {known} "
                        "(for example redis://localhost:6379/0) or pass a Store instance"
                    )
                scheme = urlsplit(self.store).scheme
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
                f"path_match must be 'exact' or 'prefix', not {safe_excerpt(self.path_match)}"
            )
        if self.reporter not in get_args(ReporterMode):
            raise ConfigurationError(
                f"reporter must be 'thread', 'off' or 'celery', not {safe_excerpt(self.reporter)}"
            )
        for method in self.confirm_methods:
            if not method.isalpha():
                raise ConfigurationError(
                    f"confirm method {safe_excerpt(method)} is not an HTTP method"
                )
        if not _PARAM_RE.match(self.token_param):
            raise ConfigurationError(
                f"token_param {safe_excerpt(self.token_param)} must be 1-64 URL-safe characters"
            )
        try:
            parts = urlsplit(self.api_base_url)
        except ValueError:
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            shown = (
                repr(redact_url(self.api_base_url))
                if parts.netloc
                else safe_excerpt(self.api_base_url)
            )
            raise ConfigurationError(
                f"api_base_url {shown} must be an http(s) URL such as {DEFAULT_API_BASE_URL}"
            )
        for name in _DURATION_FIELDS - {"clock_skew"}:
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.clock_skew < 0:
            raise ConfigurationError("clock_skew must not be negative")
        for name in ("reporter_concurrency", "queue_size", "deferred_size"):
            value = getattr(self, name)
            least = 0 if name == "deferred_size" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                kind = "a non-negative" if least == 0 else "a positive"
                raise ConfigurationError(f"{name} must be {kind} integer")
        for name in ("confirmed_redirect", "invalid_redirect", "expired_redirect"):
            target = getattr(self, name)
            if target is None:
                continue
            if not isinstance(target, str):
                raise ConfigurationError(f"{name} must be a path or URL string")
            # The target goes out verbatim in a Location header. Browsers read "\" as "/"
            # and drop tabs and newlines ("/\evil", "/\t/evil" are "//evil": another
            # site), CR/LF would split the header, and a header holds latin-1 at most: so
            # printable ASCII only, with everything else percent-encoded.
            bad = next((c for c in target if not "!" <= c <= "~" or c == "\\"), None)
            if bad is not None:
                raise ConfigurationError(
                    f"{name} {target[:200]!r} contains {bad!r}: a redirect target is "
                    "printable ASCII without spaces or backslashes; percent-encode other "
                    "characters ('/caf%C3%A9' for '/café', '%20' for a space, '%5C' for '\\')"
                )
            if not (target.startswith("/") and not target.startswith("//")):
                parts = urlsplit(target)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    raise ConfigurationError(
                        f"{name} must be a local path like '/welcome' or an absolute "
                        f"http(s) URL, not {target[:200]!r}"
                    )
        for pattern in self.bot_user_agents:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigurationError(
                    f"bot_user_agents pattern {pattern!r} is not a regular expression: {exc}"
                ) from None

    @property
    def keep_seconds(self) -> float:
        """How long a confirmed record is kept after its confirmation: the retry window,
        one lease (the last attempt's outcome is still written) and the clock skew."""
        return keep_seconds(self.retry_window, self.lease_seconds, self.clock_skew)

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """The signing keys, oldest to newest."""
        if self.secret_key is None:
            return ()
        if isinstance(self.secret_key, str):
            return (self.secret_key,) if self.secret_key else ()
        return tuple(self.secret_key)

    def record_account(self, account_sid: str | None) -> str | None:
        """The account SID a record keeps for a message sent from ``account_sid``:
        ``None`` for the settings' own (every reader falls back to :attr:`account_sid`),
        so that the common case costs no bytes in the store; a subaccount's SID as it is.
        """
        return None if not account_sid or account_sid == self.account_sid else account_sid

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRET_FIELDS and value:
                parts.append(f"{f.name}='***'")
            else:
                parts.append(f"{f.name}={value!r}")
        # Every URL (store, api_base_url, a store instance's own repr) loses its secrets.
        return redact_text(f"Settings({', '.join(parts)})")

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
        if isinstance(values.get("secret_key"), str):
            # In configuration text, several keys are separated by whitespace, which a
            # key made as advised (secrets.token_urlsafe) never contains.
            keys = values["secret_key"].split()
            values["secret_key"] = keys[0] if len(keys) == 1 else tuple(keys)
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


def keep_seconds(retry_window: float, lease_seconds: float, clock_skew: float) -> float:
    """How long a confirmed record is kept after its confirmation (see
    :attr:`Settings.keep_seconds`), for these settings' values."""
    return retry_window + lease_seconds + clock_skew


def _refuse_unknown(keys: Any) -> None:
    fields = {f.name.upper() for f in dataclasses.fields(Settings)}
    for key in keys:
        unknown = isinstance(key, str) and key.startswith(ENV_PREFIX)
        if unknown and key[len(ENV_PREFIX) :] not in fields:
            raise ConfigurationError(
                f"{key} is not a twilio-feedback setting; known settings are "
                + ", ".join(sorted(ENV_PREFIX + name for name in fields))
            )
