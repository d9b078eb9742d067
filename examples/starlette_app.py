"""Starlette + twilio-feedback.

    uvicorn starlette_app:app        # configured from the environment, see README.md

``POST /send`` with ``{"to": "+1..."}`` texts a tracked sign-in link; opening it lands on
``/confirm``, where the middleware has already confirmed it and Twilio hears of it in the
background. The middleware reads its settings from the environment when the server starts
the app: importing this module starts nothing.
"""

from __future__ import annotations

# --8<-- [start:app]
import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from twilio_feedback.starlette import FeedbackMiddleware, confirm_result, get_tracker


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("twilio-feedback Starlette example: POST /send {'to': '+1...'}")


async def send(request: Request) -> JSONResponse:
    payload = await request.json()
    message = await get_tracker(request).send_async(
        to=payload["to"],
        from_=os.environ["TWILIO_PHONE_NUMBER"],
        body="Your sign-in link: {link}",
        link=str(request.url_for("confirm")),
    )
    return JSONResponse({"message_sid": message.sid})


async def confirm(request: Request) -> JSONResponse:
    result = confirm_result(request)
    assert result is not None  # always set on a confirm path
    return JSONResponse({"status": result.status, "message_sid": result.message_sid})


app = Starlette(
    routes=[
        Route("/", home),
        Route("/send", send, methods=["POST"]),
        Route("/confirm", confirm, methods=["GET", "POST"]),
    ],
    middleware=[Middleware(FeedbackMiddleware)],  # Settings.from_env() when the server starts
)
# --8<-- [end:app]
