"""Pass-through overhead on non-confirm requests, in process, side by side.

Each case calls an app directly (no server, no network), so the figure is the
middleware's own cost per request: bare app vs the app behind FeedbackMiddleware, with a
do-nothing wrapper (the floor for any middleware) and Starlette's BaseHTTPMiddleware
doing nothing as references.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import sys
from collections.abc import Callable
from typing import Any

from .common import Figure, Section, fmt_ratio, interleaved, median, ratio_samples

PATH = "/api/items"


def _settings() -> Any:
    from twilio_feedback import Settings
    from twilio_feedback.stores.memory import MemoryStore

    return Settings(
        account_sid="AC" + "0" * 32,
        auth_token="x" * 32,
        secret_key=secrets.token_urlsafe(32),
        store=MemoryStore(),
        api_base_url="http://127.0.0.1:9",
    )


# -- ASGI ---------------------------------------------------------------------------


async def plain_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class NothingASGI:
    """A do-nothing pure ASGI wrapper: the floor for any middleware."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"page=2",
        "headers": [(b"host", b"bench"), (b"user-agent", b"Mozilla/5.0 bench")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Any) -> None:
    return None


def _asgi_case(loop: asyncio.AbstractEventLoop, app: Any, n: int) -> Callable[[], float]:
    # As a server does: a fresh scope and a task of its own for every request.
    async def many() -> float:
        import time

        scope = _scope()
        start = time.perf_counter()
        for _ in range(n):
            await asyncio.ensure_future(app(dict(scope), _receive, _send))
        return (time.perf_counter() - start) / n

    return lambda: loop.run_until_complete(many())


def _starlette(middleware: list[Any]) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def items(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(PATH, items)], middleware=middleware)


# -- WSGI ---------------------------------------------------------------------------


def plain_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


class NothingWSGI:
    """A do-nothing WSGI wrapper: the floor for any middleware."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


def _environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": PATH,
        "QUERY_STRING": "page=2",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "bench",
        "HTTP_USER_AGENT": "Mozilla/5.0 bench",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _wsgi_case(app: Any, n: int) -> Callable[[], float]:
    # As a server does: a fresh environ and input stream, a start_response that keeps the
    # status and headers, the body joined, close() called.
    def many() -> float:
        import time

        base = _environ()
        start = time.perf_counter()
        for _ in range(n):
            environ = dict(base)
            environ["wsgi.input"] = io.BytesIO(b"")
            started: list[Any] = []

            def start_response(
                status: str, headers: Any, exc_info: Any = None, seen: list[Any] = started
            ) -> Any:
                seen.append((status, headers))
                return None

            result = app(environ, start_response)
            try:
                b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        return (time.perf_counter() - start) / n

    return many


def _flask() -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.get(PATH)
    def items() -> str:
        return "ok"

    return app


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    from twilio_feedback import FeedbackTracker
    from twilio_feedback.asgi import FeedbackMiddleware as ASGIFeedback
    from twilio_feedback.wsgi import FeedbackMiddleware as WSGIFeedback

    tracker = FeedbackTracker(_settings())
    n = 2_000 if quick else 20_000
    repeats = 7 if quick else 21

    class NothingBase(BaseHTTPMiddleware):
        async def dispatch(self, request: Any, call_next: Any) -> Any:
            return await call_next(request)

    loop = asyncio.new_event_loop()
    flask_app = _flask()
    flask_wrapped = _flask()
    flask_wrapped.wsgi_app = WSGIFeedback(flask_wrapped.wsgi_app, tracker)  # type: ignore[method-assign]
    cases = {
        "asgi bare": _asgi_case(loop, plain_asgi, n),
        "asgi nothing-wrapper": _asgi_case(loop, NothingASGI(plain_asgi), n),
        "asgi feedback": _asgi_case(loop, ASGIFeedback(plain_asgi, tracker), n),
        "starlette bare": _asgi_case(loop, _starlette([]), n // 4),
        "starlette feedback": _asgi_case(
            loop, _starlette([Middleware(ASGIFeedback, tracker=tracker)]), n // 4
        ),
        "starlette BaseHTTPMiddleware": _asgi_case(
            loop, _starlette([Middleware(NothingBase)]), n // 4
        ),
        "wsgi bare": _wsgi_case(plain_wsgi, n),
        "wsgi nothing-wrapper": _wsgi_case(NothingWSGI(plain_wsgi), n),
        "wsgi feedback": _wsgi_case(WSGIFeedback(plain_wsgi, tracker), n),
        "flask bare": _wsgi_case(flask_app, n // 4),
        "flask feedback": _wsgi_case(flask_wrapped, n // 4),
    }
    for case in cases.values():  # warm up
        case()
    samples = interleaved(cases, repeats)
    loop.close()
    tracker.close()

    section = Section("Pass-through overhead (non-confirm requests, in process)")

    def ratio(name: str, num: str, den: str, target: str, limit: float | None) -> float:
        value, spread_ = fmt_ratio(ratio_samples(samples[num], samples[den]))
        med = median(ratio_samples(samples[num], samples[den]))
        verdict = "" if limit is None else ("met" if med <= limit else "missed")
        section.figures.append(Figure(name, value, spread_, target, verdict))
        return med

    floor_asgi = median(ratio_samples(samples["asgi nothing-wrapper"], samples["asgi bare"]))
    floor_wsgi = median(ratio_samples(samples["wsgi nothing-wrapper"], samples["wsgi bare"]))
    ratio(
        "plain ASGI: do-nothing wrapper / bare", "asgi nothing-wrapper", "asgi bare", "floor", None
    )
    ratio(
        "plain ASGI: FeedbackMiddleware / bare",
        "asgi feedback",
        "asgi bare",
        f"<= floor x 1.05 = {floor_asgi * 1.05:.3f}x",
        floor_asgi * 1.05,
    )
    ratio(
        "Starlette: FeedbackMiddleware / bare",
        "starlette feedback",
        "starlette bare",
        "<= 1.05x",
        1.05,
    )
    ratio(
        "Starlette: BaseHTTPMiddleware (nothing) / bare",
        "starlette BaseHTTPMiddleware",
        "starlette bare",
        "reference",
        None,
    )
    ratio(
        "plain WSGI: do-nothing wrapper / bare", "wsgi nothing-wrapper", "wsgi bare", "floor", None
    )
    ratio(
        "plain WSGI: FeedbackMiddleware / bare",
        "wsgi feedback",
        "wsgi bare",
        f"<= floor x 1.05 = {floor_wsgi * 1.05:.3f}x",
        floor_wsgi * 1.05,
    )
    ratio("Flask: FeedbackMiddleware / bare", "flask feedback", "flask bare", "<= 1.05x", 1.05)
    for name in ("asgi bare", "starlette bare", "wsgi bare", "flask bare"):
        section.notes.append(f"{name}: {median(samples[name]) * 1e6:.2f} µs per request")
    for kind in ("asgi", "wsgi"):
        extra = median(samples[f"{kind} feedback"]) - median(samples[f"{kind} nothing-wrapper"])
        section.notes.append(
            f"plain {kind.upper()}: FeedbackMiddleware costs {extra * 1e9:.0f} ns per request "
            "more than a wrapper that does nothing"
        )
    section.notes.append(
        f"{n} calls per sample ({n // 4} for Starlette and Flask), {repeats} interleaved "
        "rounds; ratios are per round, then the median and interquartile range."
    )
    return section
