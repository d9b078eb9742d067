"""Litestar + twilio-feedback, in an app factory.

    uvicorn --factory litestar_app:create_app     # configured from the environment

``POST /send`` with ``{"to": "+1..."}`` texts a tracked sign-in link; opening it lands on
``/confirm``, where the middleware has already confirmed it and Twilio hears of it in the
background. Litestar builds its middleware once per route, so one tracker, made in the
factory, is handed to every instance and to the routes (a dependency), and closed at
shutdown (it is an async context manager). Importing this module starts nothing.
"""

from __future__ import annotations

# --8<-- [start:app]
import os
from dataclasses import dataclass

from litestar import Litestar, Request, get, post, route
from litestar.di import NamedDependency, Provide
from litestar.middleware import DefineMiddleware
from litestar.params import JSONBody

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware, confirm_result


@get("/", sync_to_thread=False)
def home() -> str:
    return "twilio-feedback Litestar example: POST /send {'to': '+1...'}"


@dataclass
class SendRequest:
    to: str


@post("/send", status_code=200)
async def send(
    data: JSONBody[SendRequest], request: Request, tracker: NamedDependency[FeedbackTracker]
) -> dict[str, str]:
    message = await tracker.send_async(
        to=data.to,
        from_=os.environ["TWILIO_PHONE_NUMBER"],
        body="Your sign-in link: {link}",
        link=str(request.url_for("confirm")),
    )
    return {"message_sid": str(message.sid)}


@route("/confirm", http_method=["GET", "HEAD", "POST"], status_code=200, name="confirm")
async def confirm(request: Request) -> dict[str, str | None]:
    result = confirm_result(request.scope)
    assert result is not None  # always set on a confirm path
    return {"status": result.status, "message_sid": result.message_sid}


def create_app(settings: Settings | None = None) -> Litestar:
    tracker = FeedbackTracker(settings or Settings.from_env())
    return Litestar(
        route_handlers=[home, send, confirm],
        middleware=[DefineMiddleware(FeedbackMiddleware, tracker=tracker)],
        dependencies={"tracker": Provide(lambda: tracker, sync_to_thread=False)},
        lifespan=[tracker],  # closed (its reports flushed) at shutdown
    )


# --8<-- [end:app]
