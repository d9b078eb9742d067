"""PEP 3333 middleware: confirms on the configured paths, then runs the app as usual.

.. code-block:: python

    flask_app.wsgi_app = FeedbackMiddleware(flask_app.wsgi_app, tracker)
    application = FeedbackMiddleware(get_wsgi_application(), tracker)   # Django

The app sees the :class:`~twilio_feedback.ConfirmResult` at
``environ["twilio_feedback.result"]`` (PEP 3333 asks extension keys to be dotted). The
app's response iterable, and its ``close()``, are returned untouched. Confirm paths are
compared with ``PATH_INFO`` decoded as UTF-8, the path ASGI servers give, so a non-ASCII
confirm path gets the same answer from both adapters. The rules are those of
:class:`~twilio_feedback.confirm.ConfirmGate`.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Container, Iterable
from typing import IO, TYPE_CHECKING

from werkzeug.wsgi import get_path_info

from .confirm import ConfirmGate
from .tracker import FeedbackTracker

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ENVIRON_KEY", "FeedbackMiddleware"]

ENVIRON_KEY = "twilio_feedback.result"
"""Key of the :class:`~twilio_feedback.ConfirmResult` in the WSGI environ."""

logger = logging.getLogger("twilio_feedback")


class FeedbackMiddleware:
    """Wraps a WSGI app. The confirmation is one store operation in the request's thread;
    Twilio is told by the background reporter, so the response never waits for it.
    ``paths``: see :class:`~twilio_feedback.confirm.ConfirmGate`."""

    def __init__(
        self,
        app: WSGIApplication,
        tracker: FeedbackTracker,
        *,
        paths: re.Pattern[str] | None = None,
    ) -> None:
        self.app = app
        self.tracker = tracker
        self.gate = ConfirmGate(tracker, paths=paths)
        self._paths = _path_info_matcher(self.gate.paths)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            path = environ["PATH_INFO"]
        except KeyError:  # PEP 3333 lets a server leave an empty one out
            path = ""
        if path not in self._paths:
            return self.app(environ, start_response)
        return self._confirm(environ, start_response)

    def _confirm(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        gate = self.gate
        method = environ.get("REQUEST_METHOD", "GET")
        query = environ.get("QUERY_STRING", "")
        headers = {
            "user-agent": environ.get("HTTP_USER_AGENT", ""),
            "content-type": environ.get("CONTENT_TYPE", ""),
            "content-length": environ.get("CONTENT_LENGTH", ""),
        }
        body = None
        length = gate.form_length(method, query, headers)
        stream = environ.get("wsgi.input")
        if length and stream is not None:
            body, environ["wsgi.input"] = _read(stream, length)
        decision = gate.decide(method, query, headers, body)
        if decision.redirect is not None:
            start_response(decision.status_line, list(decision.headers))
            return []
        environ[ENVIRON_KEY] = decision.result
        if decision.query != query:
            environ["QUERY_STRING"] = decision.query
            for key in ("REQUEST_URI", "RAW_URI"):  # set by gunicorn, uWSGI, werkzeug
                if key in environ:
                    environ[key] = gate.strip_token_from_uri(environ[key])
        return self.app(environ, start_response)


def _path_info_matcher(paths: Container[object]) -> Container[object]:
    """``paths`` (decoded paths) as a container of raw ``PATH_INFO`` values.

    PEP 3333 hands the path over as its bytes, one latin-1 character each. An ASCII path
    reads the same either way, and only non-ASCII bytes decode to non-ASCII characters:
    with ASCII-only exact paths (the usual case) the set itself answers, at no extra cost.
    """
    if isinstance(paths, frozenset) and all(isinstance(p, str) and p.isascii() for p in paths):
        return paths
    return _DecodedPathInfo(paths)


class _DecodedPathInfo:
    """Container of the raw ``PATH_INFO`` values whose UTF-8 reading is in ``paths``."""

    __slots__ = ("paths",)

    def __init__(self, paths: Container[object]) -> None:
        self.paths = paths

    def __contains__(self, path_info: object) -> bool:
        if not isinstance(path_info, str):
            return False
        if path_info.isascii():
            return path_info in self.paths
        try:
            return get_path_info({"PATH_INFO": path_info}) in self.paths
        except UnicodeError:  # not a PEP 3333 string: no confirm path
            return False


def _read(stream: IO[bytes], length: int) -> tuple[bytes | None, IO[bytes]]:
    """Up to ``length`` bytes of the request body (``read`` may return fewer at a time),
    and a fresh stream holding them for the app.

    The body is ``None`` (not searched) when reading it raised, as servers do for a client
    gone: the app then reads what came, and the end of the body after it. Each read
    either brings bytes or ends the body, so the bytes bound the reads.
    """
    data = bytearray()
    try:
        while len(data) < length:
            chunk = stream.read(length - len(data))
            if not chunk:
                break
            data += chunk[: length - len(data)]
    except Exception:
        logger.debug(
            "confirm: the client left while the form was read",
            exc_info=True,
            extra={"event": "confirm_client_left"},
        )
        return None, io.BytesIO(bytes(data))
    body = bytes(data)
    return body, io.BytesIO(body)
