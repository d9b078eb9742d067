"""FastAPI + twilio-feedback.

    uvicorn fastapi_app:app          # configured from the environment, see README.md

``POST /send`` with ``{"to": "+1..."}`` texts a tracked sign-in link; opening it lands on
``/confirm``, where the middleware has already confirmed it and Twilio hears of it in the
background. The middleware reads its settings from the environment when the server starts
the app: importing this module starts nothing.
"""

from __future__ import annotations

# --8<-- [start:app]
import os
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel

from twilio_feedback import ConfirmResult, FeedbackTracker
from twilio_feedback.starlette import FeedbackMiddleware, confirm_result, get_tracker

app = FastAPI(title="twilio-feedback FastAPI example")
app.add_middleware(FeedbackMiddleware)  # Settings.from_env() when the server starts

Tracker = Annotated[FeedbackTracker, Depends(get_tracker)]
Result = Annotated[ConfirmResult | None, Depends(confirm_result)]
# --8<-- [end:app]


@app.get("/")
async def home() -> dict[str, str]:
    return {"hello": "POST /send {'to': '+1...'}"}


# --8<-- [start:send]
class SendRequest(BaseModel):
    to: str


@app.post("/send")
async def send(payload: SendRequest, request: Request, tracker: Tracker) -> dict[str, str]:
    message = await tracker.send_async(
        to=payload.to,
        from_=os.environ["TWILIO_PHONE_NUMBER"],
        body="Your sign-in link: {link}",
        link=str(request.url_for("confirm")),
    )
    return {"message_sid": str(message.sid)}


# --8<-- [end:send]


# --8<-- [start:confirm]
@app.api_route("/confirm", methods=["GET", "HEAD", "POST"])
async def confirm(result: Result) -> dict[str, str | None]:
    assert result is not None  # always set on a confirm path
    return {"status": result.status, "message_sid": result.message_sid}


# --8<-- [end:confirm]
