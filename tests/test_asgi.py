"""The ASGI adapter in process: httpx over ASGITransport, Starlette's TestClient, and a raw
driver for what those cannot show (websockets, lifespan, body chunks, disconnects)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware
from twilio_feedback.confirm import MAX_BODY_MESSAGES
from twilio_feedback.testing import FakeTwilio

from .apps import asgi_app
from .conftest import CHROME

with warnings.catch_warnings():
    # Starlette 1.x would rather its TestClient ran on httpx2; httpx works all the same.
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

FORM = "application/x-www-form-urlencoded"


def _send(tracker: FeedbackTracker, fake: FakeTwilio) -> str:
    """Send a tracked message through the emulator; return the link's token."""
    tracker.send(to="+15558675310", from_="+15017122661", body="{link}", link="http://t/confirm")
    return fake.messages[-1].body.rsplit("id=", 1)[1]


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"User-Agent": CHROME},
    )


@pytest.fixture
async def client(tracker: FeedbackTracker) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(FeedbackMiddleware(asgi_app, tracker)) as http:
        yield http


async def _drive(
    app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]
) -> tuple[list[Any], list[Any]]:
    """Run one ASGI call with scripted incoming messages; return (sent, what the app read)."""
    queue = list(incoming)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent, queue


def _http_scope(query: str = "", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/confirm",
        "raw_path": b"/confirm",
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers or [],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
    }


class Recorder:
    """An ASGI app that records its scope and every message it reads."""

    def __init__(self) -> None:
        self.scope: Any = None
        self.read: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        while True:
            message = await receive()
            self.read.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


# -- confirming ------------------------------------------------------------------------


async def test_confirm_then_duplicate(
    client: httpx.AsyncClient, tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    first = await client.get("/confirm", params={"id": token, "next": "/x"})
    assert first.json()["status"] == "confirmed"
    assert first.json()["query"] == f"id={token}&next=%2Fx"
    assert (await client.get("/confirm", params={"id": token})).json()["status"] == "duplicate"
    assert await tracker.flush_async(5) == 0
    assert [p.outcome for p in fake_twilio.feedback] == ["confirmed"]


async def test_confirm_does_not_wait_for_twilio(
    client: httpx.AsyncClient, tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    fake_twilio.latency = 2.0
    started = time.perf_counter()
    response = await client.get("/confirm", params={"id": token})
    assert time.perf_counter() - started < 1.0
    assert response.json()["status"] == "confirmed"
    assert len(await asyncio.to_thread(fake_twilio.wait_for_feedback, 1, 10)) == 1


async def test_post_form_token_and_body_replayed(
    client: httpx.AsyncClient, tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    response = await client.post("/confirm", data={"id": token, "code": "123"})
    assert response.json() == {
        "status": "confirmed",
        "query": "",
        "body": f"id={token}&code=123",
    }


async def test_body_chunks_are_replayed_as_they_came(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    recorder = Recorder()
    body = f"a=1&id={token}".encode()
    chunks = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.request", "body": body[5:], "more_body": False},
    ]
    headers = [
        (b"content-type", FORM.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"user-agent", CHROME.encode()),
    ]
    sent, _ = await _drive(FeedbackMiddleware(recorder, tracker), _http_scope("", headers), chunks)
    assert recorder.scope["twilio_feedback"].status == "confirmed"
    assert recorder.read == chunks
    assert sent[0]["status"] == 204


async def test_a_body_longer_than_declared_is_not_parsed(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    recorder = Recorder()
    chunks = [
        {"type": "http.request", "body": f"id={token}".encode(), "more_body": True},
        {"type": "http.request", "body": b"&more=1", "more_body": False},
    ]
    headers = [(b"content-type", FORM.encode()), (b"content-length", b"10")]
    headers.append((b"user-agent", CHROME.encode()))
    await _drive(FeedbackMiddleware(recorder, tracker), _http_scope("", headers), chunks)
    assert recorder.scope["twilio_feedback"].status == "invalid"
    assert recorder.read == chunks


async def test_a_client_leaving_mid_body_is_passed_on(tracker: FeedbackTracker) -> None:
    recorder = Recorder()
    headers = [(b"content-type", FORM.encode()), (b"content-length", b"40")]
    headers.append((b"user-agent", CHROME.encode()))
    incoming: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"id=abc", "more_body": True},
        {"type": "http.disconnect"},
    ]
    await _drive(FeedbackMiddleware(recorder, tracker), _http_scope("", headers), incoming)
    assert recorder.scope["twilio_feedback"].status == "invalid"
    assert recorder.read == incoming


async def test_a_json_post_is_left_alone(tracker: FeedbackTracker) -> None:
    recorder = Recorder()
    body = [{"type": "http.request", "body": b'{"id": "x"}', "more_body": False}]
    headers = [(b"content-type", b"application/json"), (b"content-length", b"11")]
    await _drive(FeedbackMiddleware(recorder, tracker), _http_scope("", headers), body)
    assert recorder.read == body
    assert recorder.scope["twilio_feedback"].status == "ignored"  # no user agent


@pytest.mark.parametrize(
    ("method", "headers", "query", "status"),
    [
        ("HEAD", {}, "id=x", None),
        ("OPTIONS", {}, "id=x", "ignored"),
        ("GET", {"User-Agent": "WhatsApp/2.23.20.0 A"}, "id=x", "ignored"),
        ("GET", {"User-Agent": ""}, "id=x", "ignored"),
        ("GET", {}, "", "invalid"),
        ("GET", {}, "id=" + "A" * 32, "invalid"),
        ("GET", {}, "id=%FF%FE" * 500, "invalid"),
        ("GET", {}, "id=" + "z" * 6000, "invalid"),
    ],
)
async def test_non_confirming_requests_still_reach_the_app(
    client: httpx.AsyncClient,
    fake_twilio: FakeTwilio,
    method: str,
    headers: dict[str, str],
    query: str,
    status: str | None,
) -> None:
    response = await client.request(method, "/confirm?" + query, headers=headers)
    assert response.status_code == 200
    if status:
        assert response.json()["status"] == status
    assert fake_twilio.feedback == []


async def test_requests_do_not_share_state(
    client: httpx.AsyncClient, tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    tokens = [_send(tracker, fake_twilio) for _ in range(5)]
    queries = [f"id={t}" for t in tokens] + ["id=bad"] * 5
    responses = await asyncio.gather(*(client.get("/confirm?" + q) for q in queries))
    seen = [(r.json()["query"], r.json()["status"]) for r in responses]
    assert seen == [(q, "confirmed") for q in queries[:5]] + [(q, "invalid") for q in queries[5:]]


async def test_lifespan_state_is_copied_not_changed(tracker: FeedbackTracker) -> None:
    shared_state: dict[str, Any] = {"db": "pool"}
    recorder = Recorder()
    scope = _http_scope("id=x", [(b"user-agent", CHROME.encode())])
    scope["method"] = "GET"
    scope["state"] = shared_state
    await _drive(FeedbackMiddleware(recorder, tracker), scope, [{"type": "http.request"}])
    assert shared_state == {"db": "pool"}
    assert recorder.scope["state"] == {
        "db": "pool",
        "twilio_feedback": recorder.scope["twilio_feedback"],
    }
    assert "twilio_feedback" not in scope


async def test_other_paths_are_untouched(tracker: FeedbackTracker) -> None:
    recorder = Recorder()
    scope = _http_scope("id=abc")
    scope["path"] = "/elsewhere"
    incoming = [{"type": "http.request", "body": b"id=abc", "more_body": False}]
    await _drive(FeedbackMiddleware(recorder, tracker), scope, incoming)
    assert recorder.scope is scope
    assert recorder.read == incoming


async def test_pattern_paths(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    token = _send(tracker, fake_twilio)
    app = FeedbackMiddleware(asgi_app, tracker, paths=re.compile(r"/(en|fr)/confirm"))
    async with _client(app) as http:
        assert (await http.get(f"/fr/confirm?id={token}")).json()["status"] == "confirmed"
        assert (await http.get(f"/confirm?id={token}")).json()["status"] is None


# -- options ---------------------------------------------------------------------------


async def test_redirects_answer_without_the_app(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    with FeedbackTracker(
        settings.replace(confirmed_redirect="/welcome", invalid_redirect="/oops")
    ) as tracker:
        token = _send(tracker, fake_twilio)
        recorder = Recorder()
        async with _client(FeedbackMiddleware(recorder, tracker)) as http:
            ok = await http.get(f"/confirm?a=1&id={token}&redirect=https://evil.example")
            assert (ok.status_code, ok.headers["location"]) == (303, "/welcome")
            assert ok.headers["cache-control"] == "no-store"
            assert ok.headers["referrer-policy"] == "no-referrer"
            bad = await http.post("/confirm?id=nope")
            assert (bad.status_code, bad.headers["location"]) == (303, "/oops")
            preview = await http.get(f"/confirm?id={token}", headers={"User-Agent": "Twitterbot"})
            assert preview.headers["location"] == "/welcome"
            preflight = await http.options(f"/confirm?id={token}")
            assert preflight.status_code == 204  # the app's own answer
        assert recorder.scope["method"] == "OPTIONS"


async def test_hide_token(settings: Settings, fake_twilio: FakeTwilio) -> None:
    with FeedbackTracker(settings.replace(hide_token=True)) as tracker:
        token = _send(tracker, fake_twilio)
        async with _client(FeedbackMiddleware(asgi_app, tracker)) as http:
            seen = (await http.get(f"/confirm?a=1&id={token}&b=2")).json()
            assert seen == {"status": "confirmed", "query": "a=1&b=2", "body": ""}
            posted = (await http.post("/confirm?x=1", data={"id": token})).json()
            assert posted == {"status": "duplicate", "query": "x=1", "body": f"id={token}"}


async def test_store_failure_is_a_result_not_a_500(settings: Settings) -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("store down")

            return fail

    with FeedbackTracker(settings.replace(store=Broken())) as tracker:
        token = tracker.ticket().token
        async with _client(FeedbackMiddleware(asgi_app, tracker)) as http:
            response = await http.get(f"/confirm?id={token}")
    assert response.status_code == 200
    assert response.json()["status"] == "deferred"  # kept until the store answers


# -- Starlette ---------------------------------------------------------------------------


def _starlette(tracker: FeedbackTracker, events: list[str]) -> Starlette:
    from contextlib import asynccontextmanager

    async def confirm(request: Request) -> JSONResponse:
        return JSONResponse({"status": request.state.twilio_feedback.status})

    async def other(request: Request) -> JSONResponse:
        return JSONResponse(
            {"query": str(request.query_params), "state": "twilio_feedback" in request.scope}
        )

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo " + await websocket.receive_text())
        await websocket.close()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(
        routes=[
            Route("/confirm", confirm, methods=["GET", "POST"]),
            Route("/other", other),
            WebSocketRoute("/confirm", echo),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(FeedbackMiddleware, tracker=tracker)
    return app


def test_starlette_request_state_websockets_and_lifespan(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    events: list[str] = []
    token = _send(tracker, fake_twilio)
    with TestClient(_starlette(tracker, events), headers={"User-Agent": CHROME}) as http:
        assert events == ["startup"]
        assert http.get(f"/confirm?id={token}").json() == {"status": "confirmed"}
        assert http.get("/other?id=abc").json() == {"query": "id=abc", "state": False}
        with http.websocket_connect(f"/confirm?id={token}") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "echo hi"
    assert events == ["startup", "shutdown"]
    assert len(fake_twilio.feedback) == 1  # shutdown flushed the report


async def test_websocket_scope_passes_straight_through(tracker: FeedbackTracker) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.extend([scope, receive, send])

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        pass

    scope = {"type": "websocket", "path": "/confirm", "query_string": b"id=x", "headers": []}
    await FeedbackMiddleware(app, tracker)(scope, receive, send)
    assert seen == [scope, receive, send]
    assert "twilio_feedback" not in scope


async def test_lifespan_passes_through_and_shutdown_flushes(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    app = FeedbackMiddleware(asgi_app, tracker)
    tracker.send(to="+15558675310", from_="+15017122661", body="c", key="k")
    fake_twilio.latency = 0.3
    assert tracker.confirm(key="k").confirmed
    sent, _ = await _drive(
        app,
        {"type": "lifespan", "asgi": {"version": "3.0"}},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # The app heard of the shutdown only once the report in flight was delivered.
    assert len(fake_twilio.feedback) == 1


async def test_a_failing_flush_does_not_stop_the_shutdown(
    tracker: FeedbackTracker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(timeout: float | None = 5.0) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(tracker, "flush_async", broken)
    sent, _ = await _drive(
        FeedbackMiddleware(asgi_app, tracker),
        {"type": "lifespan", "asgi": {"version": "3.0"}},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert sent[-1]["type"] == "lifespan.shutdown.complete"
    assert "flushing pending reports at shutdown failed" in caplog.text


# -- mounted under a root path ---------------------------------------------------------


@pytest.mark.parametrize(
    ("root_path", "path", "status"),
    [
        ("/app", "/app/confirm", "confirmed"),  # the path includes the root (ASGI spec, uvicorn)
        ("/app", "/confirm", "confirmed"),  # servers that leave the root out of the path
        ("/app/", "/app/confirm", None),
        ("/a/b", "/a/b/confirm", "confirmed"),
        ("/app", "/application/confirm", None),
        ("/app", "/app", None),
        ("/app", "/app/app/confirm", None),
        ("", "/confirm", "confirmed"),
    ],
)
async def test_confirm_paths_are_relative_to_the_root_path(
    tracker: FeedbackTracker,
    fake_twilio: FakeTwilio,
    root_path: str,
    path: str,
    status: str | None,
) -> None:
    token = _send(tracker, fake_twilio)
    recorder = Recorder()
    scope = _http_scope(f"id={token}", [(b"user-agent", CHROME.encode())])
    scope.update(method="GET", root_path=root_path, path=path, raw_path=path.encode())
    await _drive(FeedbackMiddleware(recorder, tracker), scope, [{"type": "http.request"}])
    result = recorder.scope.get("twilio_feedback")
    assert (result.status if result else None) == status
    assert (recorder.scope["path"], recorder.scope["root_path"]) == (path, root_path)


async def test_starlette_mount(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    from starlette.routing import Mount

    async def confirm(request: Request) -> JSONResponse:
        return JSONResponse({"status": request.state.twilio_feedback.status})

    inner = Starlette(routes=[Route("/confirm", confirm)])
    inner.add_middleware(FeedbackMiddleware, tracker=tracker)
    outer = Starlette(routes=[Mount("/app", app=inner)])
    token = _send(tracker, fake_twilio)
    async with _client(outer) as http:
        assert (await http.get(f"/app/confirm?id={token}")).json() == {"status": "confirmed"}
        assert (await http.get(f"/app/confirm?id={token}")).json() == {"status": "duplicate"}


# -- bad input ---------------------------------------------------------------------------


async def test_an_empty_query_parameter_defers_to_the_form(
    client: httpx.AsyncClient, tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    response = await client.post("/confirm?id=&a=1", data={"id": token})
    assert response.json()["status"] == "confirmed"


async def test_a_form_with_too_many_fields_is_invalid_and_quiet(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    body = "&".join(f"f{n}=1" for n in range(3000))
    with caplog.at_level(logging.DEBUG, logger="twilio_feedback"):
        response = await client.post("/confirm", content=body, headers={"Content-Type": FORM})
    assert response.json()["status"] == "invalid"
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []


class ClientGone(Exception):
    """What some servers raise from receive() when the client has left."""


def _form_headers(length: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", FORM.encode()),
        (b"content-length", str(length).encode()),
        (b"user-agent", CHROME.encode()),
    ]


async def test_a_receive_that_raises_is_a_disconnect(tracker: FeedbackTracker) -> None:
    first = {"type": "http.request", "body": b"a=1&", "more_body": True}
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return first
        raise ClientGone

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    recorder = Recorder()
    await FeedbackMiddleware(recorder, tracker)(_http_scope("", _form_headers(40)), receive, send)
    assert recorder.scope["twilio_feedback"].status == "invalid"
    assert recorder.read == [first, {"type": "http.disconnect"}]
    assert calls == 2  # the broken receive is not called again
    assert sent[0]["status"] == 204


async def test_endless_empty_body_chunks_are_bounded(tracker: FeedbackTracker) -> None:
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"", "more_body": True}

    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["twilio_feedback"])
        seen.append(await receive())

    async def send(message: Any) -> None:
        pass

    middleware = FeedbackMiddleware(app, tracker)
    scope = _http_scope("", _form_headers(100))
    await asyncio.wait_for(middleware(scope, receive, send), timeout=10)
    assert seen[0].status == "invalid"
    assert seen[1] == {"type": "http.request", "body": b"", "more_body": True}
    assert calls <= MAX_BODY_MESSAGES


async def test_a_form_in_many_small_chunks_is_read(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    body = f"id={token}".encode()
    chunks: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[i : i + 1], "more_body": True}
        for i in range(len(body))
    ]
    chunks.append({"type": "http.request", "body": b"", "more_body": False})
    assert len(chunks) < MAX_BODY_MESSAGES
    recorder = Recorder()
    scope = _http_scope("", _form_headers(len(body)))
    await _drive(FeedbackMiddleware(recorder, tracker), scope, chunks)
    assert recorder.scope["twilio_feedback"].status == "confirmed"
    assert recorder.read == chunks


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/bestätigen", "confirmed"),
        ("/best\ufffdtigen", None),  # "/best%E4tigen": latin-1, not UTF-8
        ("/confirm", "confirmed"),
    ],
)
async def test_non_ascii_confirm_paths(
    settings: Settings, fake_twilio: FakeTwilio, path: str, status: str | None
) -> None:
    with FeedbackTracker(settings.replace(confirm_paths=("/bestätigen", "/confirm"))) as tracker:
        token = _send(tracker, fake_twilio)
        recorder = Recorder()
        scope = _http_scope(f"id={token}", [(b"user-agent", CHROME.encode())])
        scope.update(method="GET", path=path)
        await _drive(FeedbackMiddleware(recorder, tracker), scope, [{"type": "http.request"}])
        result = recorder.scope.get("twilio_feedback")
        assert (result.status if result else None) == status
