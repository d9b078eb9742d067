"""The app the confirm-latency benchmark serves under uvicorn.

- ``/bare``: a plain route (the reference);
- ``/confirm``: the same route behind FeedbackMiddleware's confirm path;
- ``/inline``: the pattern in Twilio's guide, the handler posting feedback itself;
- ``/_tickets?n=``: issues tokens bound to seeded message SIDs (benchmark set-up only).

Configured from the environment: BENCH_TWILIO_URL, BENCH_ACCOUNT_SID, BENCH_AUTH_TOKEN,
BENCH_SIDS_FILE (a file of seeded message SIDs).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware
from twilio_feedback.stores.memory import MemoryStore

settings = Settings(
    account_sid=os.environ["BENCH_ACCOUNT_SID"],
    auth_token=os.environ["BENCH_AUTH_TOKEN"],
    api_base_url=os.environ["BENCH_TWILIO_URL"],
    secret_key=secrets.token_urlsafe(32),
    store=MemoryStore(),
    queue_size=100_000,
)
tracker = FeedbackTracker(settings)
with open(os.environ["BENCH_SIDS_FILE"]) as handle:
    sids = handle.read().split()
_next_sid = iter(sids)


async def bare(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def confirm(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok " + request.state.twilio_feedback.status)


async def inline(request: Request) -> PlainTextResponse:
    sid = request.query_params["sid"]

    def post() -> Any:
        client = tracker.api.client()
        return (
            client.api.v2010.accounts(settings.account_sid)
            .messages(sid)
            .feedback.create(outcome="confirmed")
        )

    await run_in_threadpool(post)
    return PlainTextResponse("ok confirmed")


async def tickets(request: Request) -> JSONResponse:
    tokens = []
    for _ in range(int(request.query_params["n"])):
        ticket = tracker.ticket()
        tracker.bind(ticket, next(_next_sid))
        tokens.append(ticket.token)
    return JSONResponse(tokens)


app = FeedbackMiddleware(
    Starlette(
        routes=[
            Route("/bare", bare),
            Route("/confirm", confirm),
            Route("/inline", inline),
            Route("/_tickets", tickets),
        ]
    ),
    tracker,
)
