"""Pure ASGI middleware: confirms on the configured paths, then runs the app as usual.

.. code-block:: python

    app.add_middleware(FeedbackMiddleware, tracker=tracker)   # Starlette / FastAPI
    app = FeedbackMiddleware(app, tracker)                     # any ASGI app

The app sees the :class:`~twilio_feedback.ConfirmResult` at ``scope["twilio_feedback"]``
and ``scope["state"]["twilio_feedback"]`` (Starlette: ``request.state.twilio_feedback``).
Confirm paths are relative to the app: under a ``root_path`` (``uvicorn --root-path``,
Starlette's ``Mount``) it is left out, as WSGI leaves ``SCRIPT_NAME`` out of ``PATH_INFO``.
The rules are those of :class:`~twilio_feedback.confirm.ConfirmGate`.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .confirm import MAX_BODY_MESSAGES, ConfirmGate
from .tracker import FeedbackTracker

__all__ = ["SCOPE_KEY", "FeedbackMiddleware"]

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

logger = logging.getLogger("twilio_feedback")


class FeedbackMiddleware:
    """Wraps an ASGI app.

    Store I/O goes through the tracker's async methods and Twilio is told by the
    background reporter, so neither blocks the event loop nor the response. Websockets
    pass straight through; lifespan too, except that on shutdown pending reports are
    flushed (up to ``flush_timeout`` seconds) before the app hears of it. ``paths``: see
    :class:`~twilio_feedback.confirm.ConfirmGate`.
    """

    def __init__(
        self,
        app: AnyASGIApp,
        tracker: FeedbackTracker,
        *,
        paths: re.Pattern[str] | None = None,
        flush_timeout: float = 5.0,
    ) -> None:
        self.app: ASGIApp = app
        self.tracker = tracker
        self.gate = ConfirmGate(tracker, paths=paths)
        self.flush_timeout = flush_timeout
        self._paths = self.gate.paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            root = scope.get("root_path")
            if root:
                path = _app_path(path, root)
            if path in self._paths:
                await self._confirm(scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            receive = self._flushing(receive)
        await self.app(scope, receive, send)

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
        gate = self.gate
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
