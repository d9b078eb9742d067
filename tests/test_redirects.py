"""Redirect answers: targets that would break or leave the site are refused in the settings,
and the ASGI and WSGI adapters send the very same status and header bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware as ASGIMiddleware
from twilio_feedback.errors import ConfigurationError
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.wsgi import FeedbackMiddleware as WSGIMiddleware

from .conftest import CHROME, SECRET_KEY

SID = "SM" + "ab" * 16
FIELDS = ("confirmed_redirect", "invalid_redirect", "expired_redirect")

HOSTILE = [
    "/\\evil.example",  # browsers read "\" as "/": "//evil.example"
    "/\\\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",  # browsers drop tabs and newlines: "//evil.example"
    "/\n/evil.example",
    "/ok\r\nSet-Cookie: session=stolen",
    "/ok\r",
    "/ok\x00",
    "/ok\x7f",
    " /ok",
    "/ok here",
    "/caf\u00e9",  # latin-1, but not ASCII: percent-encode it
    "/\u2603",  # not latin-1 at all
    "https://app.example/\u2603",
    "https://app.example\\@evil.example/",
    "https://app.example/ok\nx",
    "//evil.example",
    "javascript:alert(1)",
    "https:evil.example",
    "evil.example",
    "",
]

ACCEPTED = [
    "/welcome",
    "/",
    "/a/b?x=1&y=%20#done",
    "/caf%C3%A9",
    "https://app.example/ok",
    "http://127.0.0.1:8000/ok?next=%2Fhome",
]


def _settings(**changes: Any) -> Settings:
    return Settings(
        account_sid="AC" + "0" * 32,
        auth_token="token",
        secret_key=SECRET_KEY,
        store=MemoryStore(),
        api_base_url="http://127.0.0.1:9",
        **changes,
    )


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("target", HOSTILE)
def test_hostile_targets_are_refused(field: str, target: str) -> None:
    with pytest.raises(ConfigurationError, match=field) as refused:
        _settings(**{field: target})
    message = str(refused.value)
    assert "\r" not in message
    assert "\n" not in message


def test_the_error_says_what_to_change() -> None:
    with pytest.raises(ConfigurationError, match="percent-encode") as refused:
        _settings(confirmed_redirect="/caf\u00e9")
    assert "%C3%A9" in str(refused.value)
    with pytest.raises(ConfigurationError, match="percent-encode"):
        _settings(invalid_redirect="/\\evil")


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("target", ACCEPTED)
def test_accepted_targets(field: str, target: str) -> None:
    assert getattr(_settings(**{field: target}), field) == target


# -- both adapters, byte for byte ---------------------------------------------------------


@pytest.fixture(params=ACCEPTED)
def tracker(request: pytest.FixtureRequest) -> Iterator[FeedbackTracker]:
    tracker = FeedbackTracker(
        _settings(confirmed_redirect=request.param, invalid_redirect=request.param + "x")
    )
    yield tracker
    tracker.close(timeout=0)


def _asgi(tracker: FeedbackTracker, method: str, query: str, agent: str) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the middleware answers by itself")

    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/confirm",
        "raw_path": b"/confirm",
        "root_path": "",
        "query_string": query.encode("latin-1"),
        "headers": [(b"user-agent", agent.encode("latin-1"))],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }
    asyncio.run(ASGIMiddleware(app, tracker)(scope, receive, send))
    start, body = sent
    assert (body["type"], body.get("body", b""), body.get("more_body", False)) == (
        "http.response.body",
        b"",
        False,
    )
    return start["status"], [tuple(header) for header in start["headers"]]


def _wsgi(tracker: FeedbackTracker, method: str, query: str, agent: str) -> Any:
    from werkzeug.test import EnvironBuilder

    def app(environ: Any, start_response: Any) -> Any:
        raise AssertionError("the middleware answers by itself")

    environ = EnvironBuilder(
        path="/confirm", method=method, query_string=query, headers=[("User-Agent", agent)]
    ).get_environ()
    started: list[Any] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        started.extend([status, headers])
        return lambda data: None

    assert b"".join(WSGIMiddleware(app, tracker)(environ, start_response)) == b""
    status, headers = started
    code, _, reason = status.partition(" ")
    assert reason == "See Other"
    return int(code), [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


@pytest.mark.parametrize(
    ("method", "agent", "valid"),
    [
        ("GET", CHROME, True),
        ("GET", CHROME, False),
        ("POST", CHROME, True),
        ("HEAD", CHROME, True),
        ("GET", "WhatsApp/2.23.20.0 A", True),
    ],
    ids=["confirmed", "invalid", "post", "head", "preview"],
)
def test_asgi_and_wsgi_answer_byte_for_byte(
    tracker: FeedbackTracker, method: str, agent: str, valid: bool
) -> None:
    answers = []
    for adapter in (_asgi, _wsgi):
        ticket = tracker.ticket()
        tracker.bind(ticket, SID)
        query = f"id={ticket.token}" if valid else "id=forged"
        answers.append(adapter(tracker, method, query, agent))
    assert answers[0] == answers[1]
    status, headers = answers[0]
    target = tracker.settings.confirmed_redirect
    if not valid:
        target = tracker.settings.invalid_redirect
    assert status == 303
    assert headers == [
        (b"location", target.encode("ascii")),  # type: ignore[union-attr]
        (b"cache-control", b"no-store"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-type", b"text/plain"),
        (b"content-length", b"0"),
    ]
