"""The ASGI adapter in process: httpx over ASGITransport, Starlette, raw lifespan/websocket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware
from twilio_feedback.testing import FakeTwilio

from .apps import asgi_app
from .conftest import CHROME


def _send(tracker: FeedbackTracker, fake: FakeTwilio) -> str:
    tracker.send(to="+15558675310", from_="+15017122661", body="{link}", link="http://t/confirm")
    return fake.messages[-1].body.rsplit("id=", 1)[1]


@pytest.fixture
async def client(tracker: FeedbackTracker) -> AsyncIterator[httpx.AsyncClient]:
    app = FeedbackMiddleware(asgi_app, tracker)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"User-Agent": CHROME}
    ) as http:
        yield http


async def test_confirm_then_duplicate(
    client: httpx.AsyncClient, tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    first = await client.get("/confirm", params={"id": token, "next": "/x"})
    assert first.json()["status"] == "confirmed"
    assert first.json()["query"] == f"id={token}&next=%2Fx"
    assert (await client.get("/confirm", params={"id": token})).json()["status"] == "duplicate"
    assert await tracker.flush_async(5) == 0
    assert len(fake_twilio.feedback) == 1


async def test_post_form_token_and_body_replayed(
    client: httpx.AsyncClient, tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    response = await client.post("/confirm", data={"id": token, "code": "123"})
    assert response.json()["status"] == "confirmed"
    assert response.json()["body"] == f"id={token}&code=123"


@pytest.mark.parametrize(
    ("method", "headers", "query", "status"),
    [
        ("HEAD", {}, "id=x", None),
        ("GET", {"User-Agent": "WhatsApp/2.23.20.0 A"}, "id=x", "ignored"),
        ("GET", {}, "", "invalid"),
        ("GET", {}, "id=" + "A" * 32, "invalid"),
        ("GET", {}, "id=%FF%FE" * 500, "invalid"),
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


async def test_other_paths_are_untouched(client: httpx.AsyncClient) -> None:
    response = await client.get("/elsewhere?id=abc")
    assert response.json() == {"status": None, "query": "id=abc", "body": ""}


async def test_hide_token_and_redirects(settings: Settings, fake_twilio: FakeTwilio) -> None:
    with FeedbackTracker(
        settings.replace(hide_token=True, confirmed_redirect="/welcome", invalid_redirect="/oops")
    ) as tracker:
        token = _send(tracker, fake_twilio)
        app = FeedbackMiddleware(asgi_app, tracker)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"User-Agent": CHROME},
        ) as http:
            ok = await http.get(f"/confirm?a=1&id={token}&redirect=https://evil.example")
            assert (ok.status_code, ok.headers["location"]) == (303, "/welcome")
            bad = await http.get("/confirm?id=nope")
            assert (bad.status_code, bad.headers["location"]) == (303, "/oops")
        hidden = FeedbackTracker(settings.replace(hide_token=True))
        try:
            token = _send(hidden, fake_twilio)
            app = FeedbackMiddleware(asgi_app, hidden)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://t",
                headers={"User-Agent": CHROME},
            ) as http:
                seen = (await http.get(f"/confirm?a=1&id={token}")).json()
            assert seen == {"status": "confirmed", "query": "a=1", "body": ""}
        finally:
            hidden.close()


async def test_starlette_add_middleware_and_request_state(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    async def confirm(request: Request) -> JSONResponse:
        return JSONResponse({"status": request.state.twilio_feedback.status})

    app = Starlette(routes=[Route("/confirm", confirm)])
    app.add_middleware(FeedbackMiddleware, tracker=tracker)
    token = _send(tracker, fake_twilio)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers={"User-Agent": CHROME}
    ) as http:
        assert (await http.get(f"/confirm?id={token}")).json() == {"status": "confirmed"}


async def _drive(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[Any]:
    """Run one ASGI call with scripted incoming messages; return what the app sent."""
    queue = list(incoming)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_websocket_passes_through(tracker: FeedbackTracker) -> None:
    app = FeedbackMiddleware(asgi_app, tracker)
    scope = {"type": "websocket", "path": "/confirm", "query_string": b"id=x", "headers": []}
    sent = await _drive(app, scope, [{"type": "websocket.connect"}])
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "hello /confirm"
    assert "twilio_feedback" not in scope


async def test_lifespan_passes_through_and_shutdown_flushes(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    app = FeedbackMiddleware(asgi_app, tracker)
    tracker.send(to="+15558675310", from_="+15017122661", body="c", key="k")
    fake_twilio.latency = 0.3
    assert tracker.confirm(key="k").confirmed
    sent = await _drive(
        app,
        {"type": "lifespan", "asgi": {"version": "3.0"}},
        [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}],
    )
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    # Shutdown waited for the report that was still in flight.
    assert len(fake_twilio.feedback) == 1


async def test_store_failure_is_a_result_not_a_500(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("store down")

            return fail

    with FeedbackTracker(settings.replace(store=Broken())) as tracker:
        app = FeedbackMiddleware(asgi_app, tracker)
        token = tracker.ticket().token
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"User-Agent": CHROME},
        ) as http:
            response = await http.get(f"/confirm?id={token}")
    assert response.status_code == 200
    assert response.json()["status"] == "error"
