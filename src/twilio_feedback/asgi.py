"""Pure ASGI middleware: confirms on the configured paths, then runs the app as usual.

.. code-block:: python

    app.add_middleware(FeedbackMiddleware)                     # Starlette / FastAPI
    app.add_middleware(FeedbackMiddleware, settings=settings)  # settings of your own
    app = FeedbackMiddleware(app, tracker)                     # any ASGI app, your tracker

Given ``settings`` (or nothing: :meth:`~twilio_feedback.Settings.from_env`),
the middleware builds its own :class:`~twilio_feedback.FeedbackTracker` at lifespan startup
and closes it at shutdown: importing the app starts nothing. Given a ``tracker``, it uses
that one and leaves it open.

The app sees the :class:`~twilio_feedback.ConfirmResult` at ``scope["twilio_feedback"]``
and ``scope["state"]["twilio_feedback"]`` (Starlette: ``request.state.twilio_feedback``);
:func:`confirm_result` reads it, ``None`` on other paths. Every request's scope holds the
tracker, for :func:`get_tracker` (a route that sends). Confirm paths are relative to the
app: under a ``root_path`` (``uvicorn --root-path``, Starlette's ``Mount``) it is left
out, as WSGI leaves ``SCRIPT_NAME`` out of ``PATH_INFO``. The rules are those of
:class:`~twilio_feedback.confirm.ConfirmGate`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Container, Mapping, MutableMapping
from typing import Any

from .confirm import MAX_BODY_MESSAGES, ConfirmGate
from .records import ConfirmResult
from .settings import Settings
from .tracker import FeedbackTracker

__all__ = ["SCOPE_KEY", "TRACKER_KEY", "FeedbackMiddleware", "confirm_result", "get_tracker"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# What the constructor accepts: any ASGI 3 app, however its parameters are annotated
# (a raw app's ``scope: dict`` would not fit ``Scope``).
AnyASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

SCOPE_KEY = "twilio_feedback"
"""Key of the :class:`~twilio_feedback.ConfirmResult` in the scope and its ``state``."""
TRACKER_KEY = "twilio_feedback.tracker"
"""Key of the middleware's :class:`~twilio_feedback.FeedbackTracker` in every HTTP and
websocket scope."""

logger = logging.getLogger("twilio_feedback")


def confirm_result(scope: Mapping[str, Any]) -> ConfirmResult | None:
    """The :class:`~twilio_feedback.ConfirmResult` of this request, ``None`` on a path that
    does not confirm (or without the middleware). Any framework's request ``scope``
    (Litestar, Quart: ``request.scope``); Starlette and FastAPI have
    :func:`twilio_feedback.starlette.confirm_result`."""
    result = scope.get(SCOPE_KEY)
    return result if isinstance(result, ConfirmResult) else None


def get_tracker(scope: Mapping[str, Any]) -> FeedbackTracker:
    """The :class:`~twilio_feedback.FeedbackTracker` of the middleware this request went
    through (for ``send_async`` in a route). Raises ``RuntimeError`` when no
    :class:`FeedbackMiddleware` wraps the app."""
    tracker = scope.get(TRACKER_KEY)
    if not isinstance(tracker, FeedbackTracker):
        raise RuntimeError(
            "no twilio-feedback tracker in this request: wrap the app in "
            "twilio_feedback.asgi.FeedbackMiddleware"
        )
    return tracker


class FeedbackMiddleware:
    """Wraps an ASGI app.

    Pass ``tracker``, or ``settings`` (default:
    :meth:`~twilio_feedback.Settings.from_env`, read at startup), not both. With settings,
    the tracker is built in a worker thread when the server starts the app (lifespan
    startup; a configuration error fails the startup) and closed, its pending reports
    flushed for up to ``flush_timeout`` seconds, once the app has shut down. A server or
    test client that runs no lifespan gets it built at the first request instead, closed
    when the process exits. With ``tracker``, pending reports are flushed on shutdown
    (up to ``flush_timeout`` seconds) before the app hears of it, and the tracker stays
    open.

    Store I/O goes through the tracker's async methods and Twilio is told by the
    background reporter, so neither blocks the event loop nor the response. Websockets
    pass straight through. ``paths``: see :class:`~twilio_feedback.confirm.ConfirmGate`.
    """

    def __init__(
        self,
        app: AnyASGIApp,
        tracker: FeedbackTracker | None = None,
        *,
        settings: Settings | None = None,
        paths: re.Pattern[str] | None = None,
        flush_timeout: float = 5.0,
    ) -> None:
        if tracker is not None and settings is not None:
            raise TypeError("pass tracker= or settings=, not both")
        self.app: ASGIApp = app
        self.settings = settings
        self.flush_timeout = flush_timeout
        self.owns_tracker = tracker is None
        """Whether the middleware builds (and closes) its tracker itself."""
        self._pattern = paths
        self._lock = threading.Lock()
        self._tracker: FeedbackTracker | None = None
        self._gate: ConfirmGate | None = None
        self._paths: Container[object] = frozenset()
        if tracker is not None:
            self._use(tracker)

    @property
    def tracker(self) -> FeedbackTracker:
        """The tracker; one the middleware builds exists from lifespan startup (or the
        first request) to shutdown, ``RuntimeError`` outside."""
        if self._tracker is None:
            raise _not_started()
        return self._tracker

    @property
    def gate(self) -> ConfirmGate:
        """The :class:`~twilio_feedback.confirm.ConfirmGate` of :attr:`tracker`."""
        if self._gate is None:
            raise _not_started()
        return self._gate

    def _use(self, tracker: FeedbackTracker) -> None:
        gate = ConfirmGate(tracker, paths=self._pattern)
        self._gate, self._paths = gate, gate.paths
        self._tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            tracker = self._tracker
            if tracker is None:
                tracker = await self._start("its first request")
            scope[TRACKER_KEY] = tracker
            if kind == "http":
                path = scope["path"]
                root = scope.get("root_path")
                if root:
                    path = _app_path(path, root)
                if path in self._paths:
                    await self._confirm(scope, receive, send)
                    return
        elif kind == "lifespan":
            if self.owns_tracker:
                receive, send = self._owning(receive), self._closing(send)
            else:
                receive = self._flushing(receive)
        await self.app(scope, receive, send)

    async def _start(self, when: str) -> FeedbackTracker:
        return await asyncio.to_thread(self._build, when)

    def _build(self, when: str) -> FeedbackTracker:
        with self._lock:
            if self._tracker is None:
                settings = self.settings if self.settings is not None else Settings.from_env()
                self._use(FeedbackTracker(settings))
                logger.debug(
                    "twilio-feedback tracker built at %s", when, extra={"event": "tracker_built"}
                )
            assert self._tracker is not None
            return self._tracker

    def _owning(self, receive: Receive) -> Receive:
        async def receive_and_start() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start("lifespan startup")
            return message

        return receive_and_start

    def _closing(self, send: Send) -> Send:
        async def close_and_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                with self._lock:
                    tracker, self._tracker = self._tracker, None
                if tracker is not None:
                    try:
                        await tracker.aclose(self.flush_timeout)
                    except Exception:
                        logger.exception(
                            "closing the tracker at shutdown failed",
                            extra={"event": "shutdown_close_failed"},
                        )
            await send(message)

        return close_and_send

    def _flushing(self, receive: Receive) -> Receive:
        async def receive_and_flush() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                try:
                    await self.tracker.flush_async(self.flush_timeout)
                except Exception:
                    logger.exception(
                        "flushing pending reports at shutdown failed",
                        extra={"event": "shutdown_flush_failed"},
                    )
            return message

        return receive_and_flush

    async def _confirm(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self._gate
        assert gate is not None
        method = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        # Reversed, so that the first of repeated headers wins.
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in reversed(scope.get("headers") or ())
        }
        body = None
        length = gate.form_length(method, query, headers)
        if length:
            body, receive = await _read_body(receive, length)
        decision = await gate.decide_async(method, query, headers, body)
        if decision.redirect is not None:
            await send(
                {
                    "type": "http.response.start",
                    "status": decision.status,
                    "headers": [
                        (name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in decision.headers
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        scope = dict(scope)
        scope[SCOPE_KEY] = decision.result
        scope["state"] = {**scope.get("state", {}), SCOPE_KEY: decision.result}
        if decision.query != query:
            scope["query_string"] = decision.query.encode("latin-1")
        await self.app(scope, receive, send)


def _not_started() -> RuntimeError:
    return RuntimeError(
        "the middleware builds its tracker when the server starts the app (lifespan "
        "startup) or at the first request: there is none yet, or no more"
    )


def _app_path(path: str, root_path: str) -> str:
    """``path`` below ``root_path``: the path the app routes on.

    The ASGI spec puts the root path in ``path`` (uvicorn, Starlette's ``Mount``); older
    servers left it out. As Starlette's router does, the root is taken off only where the
    path starts with it as a whole segment, so both conventions give the same answer.
    """
    if not path.startswith(root_path):
        return path
    if len(path) == len(root_path):
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


async def _read_body(receive: Receive, length: int) -> tuple[bytes | None, Receive]:
    """Read the request body for its form, and return it with a ``receive`` for the app.

    The body is ``None`` (not searched) when it turns out longer than ``length``, when it
    is still incomplete after :data:`~twilio_feedback.confirm.MAX_BODY_MESSAGES` messages
    (endless empty chunks must not grow memory), and when the client leaves. The app's
    ``receive`` replays every message read, in order, then goes on with the server's. If
    the server's ``receive()`` raised (some servers do for a client gone), the app gets
    ``http.disconnect`` after the replay instead: what ASGI says a client that left is.
    """
    messages: list[Message] = []
    size = 0
    while len(messages) < MAX_BODY_MESSAGES:
        try:
            message = await receive()
        except Exception:
            logger.debug(
                "confirm: the client left while the form was read",
                exc_info=True,
                extra={"event": "confirm_client_left"},
            )
            return None, _replay(messages, _disconnected)
        messages.append(message)
        if message.get("type") != "http.request":
            break
        size += len(message.get("body") or b"")
        if size > length:
            break
        if not message.get("more_body", False):
            return b"".join(m.get("body") or b"" for m in messages), _replay(messages, receive)
    return None, _replay(messages, receive)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = deque(messages)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay
