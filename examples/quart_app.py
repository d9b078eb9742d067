"""Quart + twilio-feedback, in an app factory.

    hypercorn 'quart_app:create_app()'    # configured from the environment, see README.md

``POST /send`` with ``{"to": "+1..."}`` texts a tracked sign-in link; opening it lands on
``/confirm``, where the middleware has already confirmed it and Twilio hears of it in the
background. Settings come from ``app.config``; the middleware builds its tracker when the
server starts the app, and closes it at shutdown.
"""

from __future__ import annotations

# --8<-- [start:app]
import os
from collections.abc import Mapping
from typing import Any

from quart import Blueprint, Quart, current_app, request, url_for

from twilio_feedback import Settings
from twilio_feedback.asgi import FeedbackMiddleware, confirm_result, get_tracker


def create_app(config: Mapping[str, Any] | None = None) -> Quart:
    app = Quart(__name__)
    app.config.update((k, v) for k, v in os.environ.items() if k.startswith("TWILIO_"))
    app.config.update(config or {})
    settings = Settings.from_mapping(app.config)
    app.asgi_app = FeedbackMiddleware(app.asgi_app, settings=settings)
    app.register_blueprint(views)
    return app


views = Blueprint("views", __name__)


@views.get("/")
async def home() -> str:
    return "twilio-feedback Quart example: POST /send {'to': '+1...'}"


@views.post("/send")
async def send() -> dict[str, Any]:
    payload = await request.get_json()
    message = await get_tracker(request.scope).send_async(
        to=payload["to"],
        from_=current_app.config["TWILIO_PHONE_NUMBER"],
        body="Your sign-in link: {link}",
        link=url_for(".confirm", _external=True),
    )
    return {"message_sid": message.sid}


@views.route("/confirm", methods=["GET", "POST"])
async def confirm() -> dict[str, Any]:
    result = confirm_result(request.scope)
    assert result is not None  # always set on a confirm path
    return {"status": result.status, "message_sid": result.message_sid}


# --8<-- [end:app]
