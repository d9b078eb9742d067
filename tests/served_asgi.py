"""A Starlette app behind the ASGI middleware, for real uvicorn servers in the tests.

``app`` is served with ``uvicorn --root-path /app`` (a proxy strips the prefix);
``mounted`` holds the same app under ``Mount("/app", ...)``. Configured from the
environment, like the examples.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from twilio_feedback import ConfirmResult, FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware

tracker = FeedbackTracker(Settings.from_env())


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def send(request: Request) -> JSONResponse:
    payload = await request.json()
    message = await tracker.send_async(
        to=payload["to"],
        from_="+15017122661",
        body="Your sign-in link: {link}",
        link=str(request.url_for("confirm")),
    )
    return JSONResponse({"message_sid": message.sid})


async def confirm(request: Request) -> JSONResponse:
    result: ConfirmResult = request.state.twilio_feedback
    return JSONResponse({"status": result.status, "message_sid": result.message_sid})


app = Starlette(
    routes=[
        Route("/", home),
        Route("/send", send, methods=["POST"]),
        Route("/confirm", confirm, methods=["GET", "POST"], name="confirm"),
    ]
)
app.add_middleware(FeedbackMiddleware, tracker=tracker)

mounted = Starlette(routes=[Route("/", home), Mount("/app", app=app)])
