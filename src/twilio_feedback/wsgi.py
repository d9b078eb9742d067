"""PEP 3333 middleware: confirms on the configured paths, then runs the app as usual.

.. code-block:: python

    flask_app.wsgi_app = FeedbackMiddleware(flask_app.wsgi_app, tracker)
    application = FeedbackMiddleware(get_wsgi_application(), tracker)   # Django

The app sees the :class:`~twilio_feedback.ConfirmResult` at
``environ["twilio_feedback.result"]`` (PEP 3333 asks extension keys to be dotted). The
app's response iterable, and its ``close()``, are returned untouched.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.utils import redirect

from .confirm import ConfirmGate
from .tracker import FeedbackTracker

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ENVIRON_KEY", "FeedbackMiddleware"]

ENVIRON_KEY = "twilio_feedback.result"


class FeedbackMiddleware:
    """Wraps a WSGI app. The confirmation is one store operation in the request thread;
    Twilio is reported by the background reporter, so the response never waits for it."""

    def __init__(self, app: WSGIApplication, tracker: FeedbackTracker) -> None:
        self.app = app
        self.tracker = tracker
        self.gate = ConfirmGate(tracker)
        self._paths = self.gate.paths

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            path = environ["PATH_INFO"]
        except KeyError:  # PEP 3333 lets a server leave it out for the root
            path = ""
        if path not in self._paths:
            return self.app(environ, start_response)
        gate = self.gate
        method = environ.get("REQUEST_METHOD", "GET")
        result = gate.screen(method, environ.get("HTTP_USER_AGENT", ""))
        query = environ.get("QUERY_STRING", "")
        if result is None:
            token = gate.token_from_query(query)
            length = _length(environ)
            if token is None and gate.wants_body(method, environ.get("CONTENT_TYPE", ""), length):
                assert length is not None
                body = environ["wsgi.input"].read(length)
                environ["wsgi.input"] = io.BytesIO(body)
                token = gate.token_from_form(body)
            result = gate.confirm(token)
        environ[ENVIRON_KEY] = result
        if gate.settings.hide_token:
            environ["QUERY_STRING"] = gate.strip_token(query)
        location = gate.redirect_for(result)
        if location is None:
            return self.app(environ, start_response)
        response: Any = redirect(location, code=303)
        response.headers["Cache-Control"] = "no-store"
        return response(environ, start_response)  # type: ignore[no-any-return]


def _length(environ: WSGIEnvironment) -> int | None:
    value = environ.get("CONTENT_LENGTH", "")
    return int(value) if value.isdigit() else None
