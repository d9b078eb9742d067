"""Flask: an extension configured from ``app.config``, in the Flask-Limiter mould.

.. code-block:: python

    from twilio_feedback.flask import TwilioFeedback, confirm_result, get_tracker

    feedback = TwilioFeedback()

    def create_app():
        app = Flask(__name__)
        app.config.from_pyfile("config.py")   # TWILIO_ACCOUNT_SID, TWILIO_FEEDBACK_STORE, ...
        feedback.init_app(app)                 # or TwilioFeedback(app)
        return app

:meth:`TwilioFeedback.init_app` reads the app's settings (:func:`settings_from_config`),
builds the app's :class:`~twilio_feedback.FeedbackTracker` (``app.extensions
["twilio_feedback"]``), wraps ``app.wsgi_app`` in the WSGI
:class:`~twilio_feedback.wsgi.FeedbackMiddleware`, and adds ``flask twilio-feedback``
(every command of :mod:`twilio_feedback.cli`, on the app's own settings). Nothing lives on
a module global: app factories and several apps per process work. In a view,
:func:`confirm_result` is the request's :class:`~twilio_feedback.ConfirmResult` and
:func:`get_tracker` the app's tracker.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ConfigurationError, MissingDependencyError
from .records import ConfirmResult
from .settings import ENV_PREFIX, MIN_SECRET_KEY_LENGTH, Settings
from .tokens import derive_key
from .tracker import FeedbackTracker
from .wsgi import ENVIRON_KEY, FeedbackMiddleware

try:
    import click
    from flask import Flask, current_app, request
    from flask.cli import with_appcontext
except ImportError:  # pragma: no cover (the flask extra installs it)
    raise MissingDependencyError("flask", "flask", "twilio_feedback.flask") from None

__all__ = [
    "EXTENSION_KEY",
    "TwilioFeedback",
    "confirm_result",
    "get_tracker",
    "settings_from_config",
]

EXTENSION_KEY = "twilio_feedback"
"""Key of the app's :class:`~twilio_feedback.FeedbackTracker` in ``app.extensions``."""
COMMAND = "twilio-feedback"


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """:class:`~twilio_feedback.Settings` from a Flask ``app.config``.

    Reads the names :meth:`~twilio_feedback.Settings.from_env` reads
    (``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``, ``TWILIO_FEEDBACK_STORE``, ...); a
    misspelt ``TWILIO_FEEDBACK_*`` key is a
    :class:`~twilio_feedback.ConfigurationError`. Without ``TWILIO_FEEDBACK_SECRET_KEY``,
    the signing key is derived from the app's ``SECRET_KEY``
    (:func:`~twilio_feedback.tokens.derive_key`), with one older key per
    ``SECRET_KEY_FALLBACKS`` entry, so that rotating Flask's key rotates this one too.
    """
    known = {name for names in Settings.env_names().values() for name in names}
    values = {k: v for k, v in config.items() if k in known or k.startswith(ENV_PREFIX)}
    if not values.get(ENV_PREFIX + "SECRET_KEY"):
        derived = _derived_keys(config.get("SECRET_KEY"), config.get("SECRET_KEY_FALLBACKS"))
        if derived:
            values[ENV_PREFIX + "SECRET_KEY"] = derived
    return Settings.from_mapping(values)


def _derived_keys(secret: object, fallbacks: object) -> tuple[str, ...]:
    """Signing keys derived from Flask's secret keys, oldest first (Flask lists its
    fallbacks before the current key too)."""
    if not secret:
        if fallbacks:
            raise ConfigurationError("SECRET_KEY_FALLBACKS is set but SECRET_KEY is not")
        return ()
    keys: list[object] = [*(fallbacks if isinstance(fallbacks, Sequence) else ()), secret]
    derived = []
    for key in keys:
        if not isinstance(key, (str, bytes)):
            raise ConfigurationError(f"SECRET_KEY is a {type(key).__name__}: use a str")
        if len(key) < MIN_SECRET_KEY_LENGTH:
            # A short SECRET_KEY would make every link forgeable by guessing it.
            raise ConfigurationError(
                f"the app's SECRET_KEY (or a SECRET_KEY_FALLBACKS entry) is {len(key)} "
                f"characters, too short to sign tracking links: use at least "
                f"{MIN_SECRET_KEY_LENGTH} random characters (python -c 'import secrets; "
                "print(secrets.token_hex())'), or set TWILIO_FEEDBACK_SECRET_KEY"
            )
        derived.append(derive_key(key))
    return tuple(derived)


class TwilioFeedback:
    """The Flask extension: ``TwilioFeedback(app)``, or ``TwilioFeedback()`` then
    :meth:`init_app` for each app (app factories).

    ``settings`` replace the app's configuration (tests, or settings built elsewhere);
    ``paths``: see :class:`~twilio_feedback.confirm.ConfirmGate`. The extension object
    holds no app state; each app's tracker is in its ``app.extensions``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        settings: Settings | None = None,
        paths: re.Pattern[str] | None = None,
    ) -> None:
        self.settings = settings
        self.paths = paths
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure ``app``: build its tracker from ``app.config`` (its reporter starts
        now, and in each forked worker), wrap ``app.wsgi_app``, add ``flask
        twilio-feedback``. Raises :class:`~twilio_feedback.ConfigurationError` for settings
        that cannot work, and ``RuntimeError`` for an app initialised already."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(f"twilio-feedback is initialised on {app.name!r} already")
        settings = self.settings or settings_from_config(app.config)
        tracker = FeedbackTracker(settings)
        app.extensions[EXTENSION_KEY] = tracker
        app.wsgi_app = FeedbackMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, tracker, paths=self.paths
        )
        app.cli.add_command(_command)

    @property
    def tracker(self) -> FeedbackTracker:
        """The current app's tracker (:func:`get_tracker`)."""
        return get_tracker()


def get_tracker(app: Flask | None = None) -> FeedbackTracker:
    """The :class:`~twilio_feedback.FeedbackTracker` of ``app`` (default: the current
    app). Raises ``RuntimeError`` when the app was not initialised."""
    app = app if app is not None else current_app
    tracker = app.extensions.get(EXTENSION_KEY)
    if not isinstance(tracker, FeedbackTracker):
        raise RuntimeError(
            "twilio-feedback is not initialised on this app: TwilioFeedback(app), or "
            "init_app(app) in the app factory"
        )
    return tracker


def confirm_result() -> ConfirmResult | None:
    """The current request's :class:`~twilio_feedback.ConfirmResult`; ``None`` on a path
    that does not confirm."""
    result = request.environ.get(ENVIRON_KEY)
    return result if isinstance(result, ConfirmResult) else None


class _Command(click.Command):
    def get_short_help_str(self, limit: int = 45) -> str:
        # Named from the command line's own parser, read when `flask --help` shows it.
        from .cli import command_names

        return f"twilio-feedback on this app's store: {', '.join(command_names())}."


@click.command(
    COMMAND,
    cls=_Command,
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def _command(args: tuple[str, ...]) -> None:
    """``twilio-feedback`` on the app's own settings (its store and credentials)."""
    from .cli import main

    tracker = get_tracker()
    # The app's own tracker has been reporting since the app was made: let it hand over,
    # so that a drain finds every unreported record free to take.
    tracker.close()
    code = main(list(args), settings=tracker.settings, prog=f"flask {COMMAND}")
    click.get_current_context().exit(code)
