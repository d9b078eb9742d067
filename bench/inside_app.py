"""The app the in-server benchmarks (confirm_inside, throughput) serve under uvicorn.

A Starlette app with two routes, ``/bare`` (the reference) and ``/confirm`` (the same
handler behind FeedbackMiddleware's confirm path), plus set-up routes the load never
touches: ``/_tickets?n=`` (issue and bind tokens in this process: the memory store) and
``/_stats`` (this process's counters and timings, as JSON; ``?reset=1`` clears them).

With ``BENCH_TIMING=1`` two thin ASGI layers time every ``/bare`` and ``/confirm`` request
inside the server: the outer one where the middleware is entered, the inner one where the
wrapped app is called and where it returns, so the middleware's share of a request is
``inner entered - outer entered`` and nothing else. The outer layer also drives the
request's coroutine step by step, timing each step: the longest is the longest the
request held the event loop. A task that sleeps 1 ms in a loop records how late it wakes
(the loop's lag).

Configured from the environment: BENCH_STORE (a store URL), BENCH_TWILIO_URL,
BENCH_ACCOUNT_SID, BENCH_AUTH_TOKEN, BENCH_SECRET_KEY, BENCH_SIDS_FILE (message SIDs
FakeTwilio knows, cycled through by ``/_tickets``), BENCH_TIMING, BENCH_REPORTER (a
``reporter`` setting, when the library has one).
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import dataclasses
import gc
import itertools
import os
import socket
import time
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.asgi import FeedbackMiddleware


def _set_nodelay(sock: socket.socket) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# `uvicorn --workers N` binds its listening socket itself, with proto 0, and asyncio sets
# TCP_NODELAY only on sockets whose proto says TCP: without this, every response of a
# multi-worker server waits ~40 ms for the client's delayed ACK (h11 writes the head and
# the body separately). One worker (uvicorn lets asyncio bind) is not affected.
asyncio.base_events._set_nodelay = _set_nodelay  # type: ignore[attr-defined]

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
TIMED = ("/bare", "/confirm")
MARK = "bench.mark"

options: dict[str, Any] = {
    "account_sid": os.environ["BENCH_ACCOUNT_SID"],
    "auth_token": os.environ["BENCH_AUTH_TOKEN"],
    "api_base_url": os.environ["BENCH_TWILIO_URL"],
    "secret_key": os.environ["BENCH_SECRET_KEY"],
    "store": os.environ.get("BENCH_STORE", "memory://"),
    "queue_size": 100_000,
}
if os.environ.get("BENCH_REPORTER"):
    # A `reporter` setting ("thread" | "off") is on its way (another issue); until it lands
    # on main, asking for it fails here, loudly, rather than measuring the wrong thing.
    if "reporter" not in {f.name for f in dataclasses.fields(Settings)}:
        raise SystemExit("this twilio-feedback has no `reporter` setting yet")
    options["reporter"] = os.environ["BENCH_REPORTER"]
settings = Settings(**options)
tracker = FeedbackTracker(settings)
with open(os.environ["BENCH_SIDS_FILE"]) as handle:
    _sids = itertools.cycle(handle.read().split())

# (kind, middleware ns, app ns, whole request ns, longest step ns, longest step's CPU ns,
# the request's CPU ns on the loop's thread), and loop lags in ns.
samples: list[tuple[str, int, int, int, int, int, int]] = []
lags: list[int] = []
gc_pauses: list[tuple[int, int]] = []  # (generation, ns) of each garbage collection
_monitor: asyncio.Task[None] | None = None


async def bare(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def confirm(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok " + request.state.twilio_feedback.status)


async def tickets(request: Request) -> Response:
    tokens = []
    for _ in range(int(request.query_params["n"])):
        ticket = tracker.ticket()
        tracker.bind(ticket, next(_sids))
        tokens.append(ticket.token)
    return PlainTextResponse("\n".join(tokens))


async def stats(request: Request) -> JSONResponse:
    body = {
        "pid": os.getpid(),
        "tracker": tracker.stats(),
        "samples": samples,
        "lags": lags,
        "gc": gc_pauses,
    }
    response = JSONResponse(body)
    if request.query_params.get("reset"):
        samples.clear()
        lags.clear()
        gc_pauses.clear()
    return response


class _Steps:
    """Awaits a coroutine, timing each of its steps (each stretch it runs without
    yielding to the event loop): the longest in wall time and in this thread's CPU time,
    and the CPU time of all of them (the request's own work on the loop's thread)."""

    __slots__ = ("coro", "cpu", "longest", "longest_cpu")

    def __init__(self, coro: Awaitable[None]) -> None:
        self.coro: Any = coro
        self.longest = self.longest_cpu = self.cpu = 0

    def _note(self, wall: int, cpu: int) -> None:
        self.cpu += cpu
        if wall > self.longest:
            self.longest = wall
        if cpu > self.longest_cpu:
            self.longest_cpu = cpu

    def __await__(self) -> Generator[Any, Any, None]:
        coro = self.coro
        value: Any = None
        error: BaseException | None = None
        clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
        while True:
            start, cpu = clock(), cpu_clock()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration:
                self._note(clock() - start, cpu_clock() - cpu)
                return
            except BaseException:
                self._note(clock() - start, cpu_clock() - cpu)
                raise
            self._note(clock() - start, cpu_clock() - cpu)
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                value, error = None, exc


_gc_started = [0]


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter_ns()
    else:
        gc_pauses.append((info["generation"], time.perf_counter_ns() - _gc_started[0]))


async def _watch_loop() -> None:
    clock = time.perf_counter_ns
    while True:
        start = clock()
        await asyncio.sleep(0.001)
        lags.append(clock() - start - 1_000_000)


class Outer:
    """Entered before the middleware: stamps the request, drives it step by step."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        global _monitor
        if scope["type"] != "http" or scope["path"] not in TIMED:
            await self.app(scope, receive, send)
            return
        if _monitor is None:
            _monitor = asyncio.get_running_loop().create_task(_watch_loop())
        clock = time.perf_counter_ns
        mark = [clock(), 0, 0]
        scope[MARK] = mark  # the middleware copies the scope; the list is shared
        steps = _Steps(self.app(scope, receive, send))
        await steps
        end = clock()
        samples.append(
            (
                scope["path"][1:],
                mark[1] - mark[0],
                mark[2] - mark[1],
                end - mark[0],
                steps.longest,
                steps.longest_cpu,
                steps.cpu,
            )
        )


class Inner:
    """Between the middleware and the app: when the app is called, and when it returns."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        mark = scope.get(MARK)
        if mark is None:
            await self.app(scope, receive, send)
            return
        mark[1] = time.perf_counter_ns()
        await self.app(scope, receive, send)
        mark[2] = time.perf_counter_ns()


routes = [
    Route("/bare", bare),
    Route("/confirm", confirm),
    Route("/_tickets", tickets),
    Route("/_stats", stats),
]
inner: ASGIApp = Starlette(routes=routes)
app: ASGIApp
if os.environ.get("BENCH_TIMING"):
    gc.callbacks.append(_on_gc)
    app = Outer(FeedbackMiddleware(Inner(inner), tracker))
else:
    app = FeedbackMiddleware(inner, tracker)
