"""The app the soak serves under uvicorn: a Starlette app behind the pure ASGI
FeedbackMiddleware, on default settings but for the store and the Twilio endpoint.

- ``/confirm`` (GET, HEAD, POST): answers the :class:`ConfirmResult`'s status as JSON;
- ``/``, ``/api/items``, ``/api/echo`` (POST): other pages, never on the confirm path;
- ``/_stats``: the tracker's counters, the event loop's lag (how late a 50 ms timer fires:
  time the loop could not serve requests) and the CPU time of the process's threads by
  name (read by the harness after the run, not part of the traffic).

The app itself never answers 5xx: any 5xx the load generator sees comes from the
middleware (an exception it let through, or a result the app could not read).

Configured from the environment: SOAK_STORE_URL, SOAK_SECRET_KEY, SOAK_TWILIO_URL,
SOAK_ACCOUNT_SID, SOAK_AUTH_TOKEN. Logs (INFO and up of twilio_feedback) go to stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("twilio_feedback").setLevel(logging.INFO)

settings = Settings(
    account_sid=os.environ["SOAK_ACCOUNT_SID"],
    auth_token=os.environ["SOAK_AUTH_TOKEN"],
    api_base_url=os.environ["SOAK_TWILIO_URL"],
    secret_key=os.environ["SOAK_SECRET_KEY"],
    store=os.environ["SOAK_STORE_URL"],
)
tracker = FeedbackTracker(settings)


async def confirm(request: Request) -> Response:
    return JSONResponse({"status": request.state.twilio_feedback.status})


async def home(request: Request) -> Response:
    return PlainTextResponse("home")


async def items(request: Request) -> Response:
    return JSONResponse([{"id": n, "name": f"item {n}"} for n in range(10)])


async def echo(request: Request) -> Response:
    return JSONResponse({"received": len(await request.body())})


TICK = 0.05
lags: list[tuple[float, float]] = []  # (time.time(), seconds late) of ticks over 100 ms late


async def watch_loop() -> None:
    while True:
        start = time.perf_counter()
        await asyncio.sleep(TICK)
        late = time.perf_counter() - start - TICK
        if late > 0.1 and len(lags) < 10_000:
            lags.append((time.time(), late))


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, by name without its number."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = re.sub(r"[-_ ]?\d+.*$", "", thread.name) or thread.name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


async def stats(request: Request) -> Response:
    return JSONResponse(
        {
            "tracker": tracker.stats(),
            "lags": lags,
            "threads": thread_cpu(),
            "cpu": time.process_time(),
        }
    )


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    watcher = asyncio.create_task(watch_loop())
    yield
    watcher.cancel()
    await tracker.aclose(timeout=2.0)


app = FeedbackMiddleware(
    Starlette(
        routes=[
            Route("/confirm", confirm, methods=["GET", "HEAD", "POST"]),
            Route("/", home),
            Route("/api/items", items),
            Route("/api/echo", echo, methods=["POST"]),
            Route("/_stats", stats),
        ],
        lifespan=lifespan,
    ),
    tracker,
)
