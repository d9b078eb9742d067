"""Tiny apps that echo what the middleware handed them, for the adapter tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from twilio_feedback import ConfirmResult


def _describe(result: ConfirmResult | None, query: str, body: bytes) -> bytes:
    return json.dumps(
        {
            "status": result.status if result else None,
            "query": query,
            "body": body.decode("latin-1"),
        }
    ).encode()


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hello " + scope["path"]})
        await send({"type": "websocket.close"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = _describe(scope.get("twilio_feedback"), scope["query_string"].decode(), body)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class ClosingIterable:
    """A response iterable that records whether the server closed it."""

    closed = False

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __iter__(self) -> Any:
        return iter([self.payload])

    def close(self) -> None:
        ClosingIterable.closed = True


def wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    payload = _describe(environ.get("twilio_feedback.result"), environ["QUERY_STRING"], body)
    start_response("200 OK", [("Content-Type", "application/json")])
    return ClosingIterable(payload)
