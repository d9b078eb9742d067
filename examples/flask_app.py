"""Flask + twilio-feedback, in an app factory.

    gunicorn 'flask_app:create_app()'    # configured from the environment, see README.md

``POST /send`` with ``{"to": "+1..."}`` texts a tracked sign-in link; opening it lands on
``/confirm``, where the middleware has already confirmed it and Twilio hears of it in the
background. Settings come from ``app.config``: here ``FLASK_*`` and ``TWILIO_*``
environment variables; the tracking links are signed with a key derived from the app's
``SECRET_KEY`` unless ``TWILIO_FEEDBACK_SECRET_KEY`` is set.
"""

from __future__ import annotations

# --8<-- [start:factory]
import os
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, current_app, request, url_for

from twilio_feedback.flask import TwilioFeedback, confirm_result, get_tracker

feedback = TwilioFeedback()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_prefixed_env()  # FLASK_SECRET_KEY=... becomes SECRET_KEY
    app.config.update((k, v) for k, v in os.environ.items() if k.startswith("TWILIO_"))
    app.config.update(config or {})
    feedback.init_app(app)
    app.register_blueprint(views)
    return app


# --8<-- [end:factory]


# --8<-- [start:views]
views = Blueprint("views", __name__)


@views.get("/")
def home() -> str:
    return "twilio-feedback Flask example: POST /send {'to': '+1...'}"


@views.post("/send")
def send() -> dict[str, Any]:
    message = get_tracker().send(
        to=request.get_json()["to"],
        from_=current_app.config["TWILIO_PHONE_NUMBER"],
        body="Your sign-in link: {link}",
        link=url_for(".confirm", _external=True),
    )
    return {"message_sid": message.sid}


@views.route("/confirm", methods=["GET", "POST"])
def confirm() -> dict[str, Any]:
    result = confirm_result()
    assert result is not None  # always set on a confirm path
    return {"status": result.status, "message_sid": result.message_sid}


# --8<-- [end:views]
