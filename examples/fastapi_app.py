"""FastAPI + twilio-feedback.

    uvicorn fastapi_app:app          # configured from the environment, see README.md

``POST /send`` with ``{"to": "+1..."}`` texts a tracked sign-in link; opening it lands on
``/confirm``, where the middleware has already confirmed it and Twilio hears of it in the
background.
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Request
from pydantic import BaseModel

from twilio_feedback import ConfirmResult, FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware

tracker = FeedbackTracker(Settings.from_env())

app = FastAPI(title="twilio-feedback FastAPI example")
app.add_middleware(FeedbackMiddleware, tracker=tracker)


class SendRequest(BaseModel):
    to: str


@app.get("/")
async def home() -> dict[str, str]:
    return {"hello": "POST /send {'to': '+1...'}"}


@app.post("/send")
async def send(payload: SendRequest, request: Request) -> dict[str, str]:
    message = await tracker.send_async(
        to=payload.to,
        from_=os.environ["TWILIO_PHONE_NUMBER"],
        body="Your sign-in link: {link}",
        link=str(request.url_for("confirm")),
    )
    return {"message_sid": str(message.sid)}


@app.api_route("/confirm", methods=["GET", "HEAD", "POST"])
async def confirm(request: Request) -> dict[str, str | None]:
    result: ConfirmResult = request.state.twilio_feedback
    return {"status": result.status, "message_sid": result.message_sid}
