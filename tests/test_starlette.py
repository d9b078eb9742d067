"""Starlette and FastAPI: a middleware that builds its tracker at startup (nothing at
import), typed access to the result and the tracker, each framework's own test client."""

from __future__ import annotations

import threading
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from twilio_feedback import ConfigurationError, ConfirmResult, FeedbackTracker, Settings
from twilio_feedback.asgi import TRACKER_KEY
from twilio_feedback.starlette import FeedbackMiddleware, confirm_result, get_tracker
from twilio_feedback.testing import FakeTwilio

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2")
    from starlette.testclient import TestClient

TO = "+15558675310"


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("twilio-feedback")}


def _fastapi(*, wrapped: bool = True, **options: Any) -> FastAPI:
    app = FastAPI()
    if wrapped:
        app.add_middleware(FeedbackMiddleware, **options)

    @app.post("/send")
    async def send(tracker: Annotated[FeedbackTracker, Depends(get_tracker)]) -> dict[str, str]:
        message = await tracker.send_async(
            to=TO, from_="+15017122661", body="{link}", link="http://testserver/confirm"
        )
        return {"message_sid": str(message.sid)}

    @app.get("/confirm")
    async def confirm(
        result: Annotated[ConfirmResult | None, Depends(confirm_result)],
    ) -> dict[str, str | None]:
        assert result is not None
        return {"status": result.status, "message_sid": result.message_sid}

    @app.get("/other")
    async def other(
        result: Annotated[ConfirmResult | None, Depends(confirm_result)],
    ) -> dict[str, str | None]:
        return {"result": None if result is None else result.status}

    return app


def test_fastapi_app_from_the_environment_starts_nothing_until_the_server_does(
    monkeypatch: pytest.MonkeyPatch, fake_twilio: FakeTwilio
) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FEEDBACK_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    before = _threads()
    app = _fastapi()  # no settings in the environment yet: importing the app is fine
    assert _threads() == before
    with pytest.raises(ConfigurationError, match="account_sid is missing"), TestClient(app):
        pass  # ... and the server's startup fails, saying what is missing
    assert _threads() == before


def test_fastapi_with_its_test_client_and_the_env_fixture(
    twilio_feedback_env: dict[str, str], fake_twilio: FakeTwilio
) -> None:
    app = _fastapi()
    before = _threads()
    with TestClient(app) as client:
        assert _threads() > before  # the reporter started at startup
        sid = client.post("/send").json()["message_sid"]
        link = fake_twilio.last_link(to=TO)
        assert client.head(link).status_code == 405  # FastAPI's answer; nothing confirmed
        assert client.get(link).json() == {"status": "confirmed", "message_sid": sid}
        assert client.get(link).json()["status"] == "duplicate"
        assert client.get("/other", params={"id": "x"}).json() == {"result": None}
        fake_twilio.wait_for_feedback(1)
    assert _threads() == before  # shutdown closed the tracker
    assert [p.message_sid for p in fake_twilio.feedback] == [sid]


def test_without_counting_test_clients_the_test_client_is_ignored(
    twilio_feedback_settings: Settings, fake_twilio: FakeTwilio
) -> None:
    app = _fastapi(settings=twilio_feedback_settings.replace(count_test_clients=False))
    with TestClient(app) as client:
        client.post("/send")
        assert client.get(fake_twilio.last_link()).json()["status"] == "ignored"


def test_each_lifespan_gets_a_tracker_of_its_own(twilio_feedback_settings: Settings) -> None:
    middleware = FeedbackMiddleware(_fastapi(wrapped=False), settings=twilio_feedback_settings)
    trackers = []
    for _ in range(2):
        with TestClient(middleware):
            trackers.append(middleware.tracker)
        with pytest.raises(RuntimeError, match="lifespan startup"):
            middleware.tracker  # noqa: B018
    first, second = trackers
    assert first is not second
    assert first._closed
    assert second._closed


async def test_without_a_lifespan_the_first_request_builds_it(
    twilio_feedback_settings: Settings, fake_twilio: FakeTwilio
) -> None:
    middleware = FeedbackMiddleware(_fastapi(wrapped=False), settings=twilio_feedback_settings)
    transport = httpx.ASGITransport(app=middleware)  # runs no lifespan
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.post("/send")
        response = await client.get(fake_twilio.last_link())
        assert response.json()["status"] == "confirmed"
        fake_twilio.wait_for_feedback(1)
    assert middleware.owns_tracker
    await middleware.tracker.aclose()


def test_starlette_middleware_list_and_request_helpers(
    twilio_feedback_settings: Settings, fake_twilio: FakeTwilio
) -> None:
    seen: list[Any] = []

    async def send(request: Request) -> JSONResponse:
        message = await get_tracker(request).send_async(
            to=TO, from_="+15017122661", body="{link}", link=str(request.url_for("confirm"))
        )
        return JSONResponse({"message_sid": message.sid})

    async def confirm(request: Request) -> JSONResponse:
        result = confirm_result(request)
        seen.append(result)
        if result is not None:
            assert result is request.state.twilio_feedback
        return JSONResponse({"status": result.status if result else None})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield

    app = Starlette(
        routes=[
            Route("/send", send, methods=["POST"]),
            Route("/confirm", confirm, name="confirm"),
            Route("/elsewhere", confirm),
        ],
        middleware=[Middleware(FeedbackMiddleware, settings=twilio_feedback_settings)],
        lifespan=lifespan,
    )
    with TestClient(app) as client:
        client.post("/send")
        link = fake_twilio.last_link(to=TO)
        assert client.get(link).json() == {"status": "confirmed"}
        assert client.get("/elsewhere").json() == {"status": None}
    assert seen[-1] is None


def test_a_given_tracker_is_shared_and_left_open(
    twilio_feedback_settings: Settings, fake_twilio: FakeTwilio
) -> None:
    with FeedbackTracker(twilio_feedback_settings) as tracker:
        app = _fastapi(tracker=tracker)
        with TestClient(app) as client:
            client.post("/send")
            assert client.get(fake_twilio.last_link()).json()["status"] == "confirmed"
        assert not tracker._closed
        assert tracker.stats()["confirmed"] == 1


def test_tracker_and_settings_are_one_or_the_other(twilio_feedback_settings: Settings) -> None:
    with FeedbackTracker(twilio_feedback_settings) as tracker, pytest.raises(TypeError):
        FeedbackMiddleware(_fastapi(wrapped=False), tracker, settings=twilio_feedback_settings)


def test_helpers_without_the_middleware() -> None:
    app = FastAPI()

    @app.get("/")
    async def home(request: Request) -> dict[str, str | None]:
        assert confirm_result(request) is None
        with pytest.raises(RuntimeError, match="FeedbackMiddleware"):
            get_tracker(request)
        return {"ok": "yes"}

    with TestClient(app) as client:
        assert client.get("/").json() == {"ok": "yes"}


async def test_the_tracker_is_in_every_http_and_websocket_scope(
    twilio_feedback_settings: Settings,
) -> None:
    scopes: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)

    middleware = FeedbackMiddleware(app, settings=twilio_feedback_settings)
    for kind in ("http", "websocket"):
        scope = {"type": kind, "path": "/x", "query_string": b"", "headers": []}
        await middleware(scope, None, None)
    assert [s[TRACKER_KEY] for s in scopes] == [middleware.tracker] * 2
    await middleware.tracker.aclose()
