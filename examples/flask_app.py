"""Flask + twilio-feedback.

    gunicorn flask_app:app           # configured from app.config, see README.md

``POST /send`` with ``{"to": "+1..."}`` texts a tracked sign-in link; opening it lands on
``/confirm``, where the middleware has already confirmed it and Twilio hears of it in the
background.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request, url_for

from twilio_feedback import ConfirmResult, FeedbackTracker, Settings
from twilio_feedback.wsgi import FeedbackMiddleware

app = Flask(__name__)
# Your own configuration goes here (a file, a class...); this example reads TWILIO_* names.
app.config.update((k, v) for k, v in os.environ.items() if k.startswith("TWILIO_"))

tracker = FeedbackTracker(Settings.from_mapping(app.config))
app.wsgi_app = FeedbackMiddleware(app.wsgi_app, tracker)  # type: ignore[method-assign]


@app.get("/")
def home() -> str:
    return "twilio-feedback Flask example: POST /send {'to': '+1...'}"


@app.post("/send")
def send() -> dict[str, Any]:
    message = tracker.send(
        to=request.get_json()["to"],
        from_=app.config["TWILIO_PHONE_NUMBER"],
        body="Your sign-in link: {link}",
        link=url_for("confirm", _external=True),
    )
    return {"message_sid": message.sid}


@app.route("/confirm", methods=["GET", "POST"])
def confirm() -> dict[str, Any]:
    result: ConfirmResult = request.environ["twilio_feedback.result"]
    return {"status": result.status, "message_sid": result.message_sid}
