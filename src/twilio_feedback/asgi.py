"""Pure ASGI middleware: confirms on the configured paths, then runs the app as usual.

.. code-block:: python

    app.add_middleware(FeedbackMiddleware, tracker=tracker)   # Starlette / FastAPI
    app = FeedbackMiddleware(app, tracker)                     # any ASGI app

The app sees the :class:`~twilio_feedback.ConfirmResult` at ``scope["twilio_feedback"]``
and ``scope["state"]["twilio_feedback"]`` (Starlette: ``request.state.twilio_feedback``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .confirm import ConfirmGate
from .records import ConfirmResult
from .tracker import FeedbackTracker

__all__ = ["FeedbackMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "twilio_feedback"


class FeedbackMiddleware:
    """Wraps an ASGI app. Store I/O uses the tracker's async methods; Twilio is reported
    by the background reporter, so the response never waits for it. Websockets pass
    straight through; lifespan too, except that shutdown first flushes pending reports
    (up to ``flush_timeout`` seconds)."""

    def __init__(
        self, app: ASGIApp, tracker: FeedbackTracker, *, flush_timeout: float = 5.0
    ) -> None:
        self.app = app
        self.tracker = tracker
        self.gate = ConfirmGate(tracker)
        self.flush_timeout = flush_timeout
        self._paths = self.gate.paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["path"] in self._paths:
                await self._confirm(scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            receive = self._flushing(receive)
        await self.app(scope, receive, send)

    def _flushing(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.tracker.flush_async(self.flush_timeout)
            return message

        return wrapped

    async def _confirm(self, scope: Scope, receive: Receive, send: Send) -> None:
        gate = self.gate
        headers = dict(scope.get("headers") or ())
        method = scope["method"]
        result: ConfirmResult | None = gate.screen(
            method, headers.get(b"user-agent", b"").decode("latin-1")
        )
        query = scope.get("query_string", b"").decode("latin-1")
        if result is None:
            token = gate.token_from_query(query)
            length = headers.get(b"content-length", b"")
            if token is None and gate.wants_body(
                method,
                headers.get(b"content-type", b"").decode("latin-1"),
                int(length) if length.isdigit() else None,
            ):
                body, receive = await _buffer(receive)
                token = gate.token_from_form(body)
            result = await gate.confirm_async(token)
        scope = dict(scope)
        scope[SCOPE_KEY] = result
        scope["state"] = {**scope.get("state", {}), SCOPE_KEY: result}
        if gate.settings.hide_token:
            scope["query_string"] = gate.strip_token(query).encode("latin-1")
        location = gate.redirect_for(result)
        if location is None:
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"cache-control", b"no-store"),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    """Read the whole request body, and a ``receive`` that replays it to the app."""
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", _replay([message], receive)
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return body, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay
