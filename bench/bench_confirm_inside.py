"""The time the middleware adds to a confirm, measured inside the server process.

One uvicorn worker serves ``bench.inside_app`` with its timing layers: the middleware's
share of each request (from entering it to the wrapped app being called), the bare
route's handler time, the longest stretch each request held the event loop, and the
loop's lag (a task sleeping 1 ms in a loop, recording how late it wakes). 50 keep-alive
clients in another process (``bench.loadgen``) send bare and confirm requests
interleaved, each confirm a first-time confirmation of its own token, issued and bound
beforehand; then, for the lag's reference, the same number of bare requests alone.
FakeTwilio answers the reporter from a process of its own.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import fill
from .common import Figure, Section, percentile

CLIENTS = 50
THINK = 0.1  # mean pause between a client's requests: ~500 requests/s offered in all
BACKENDS = ["memory", "sqlite", "postgresql", "redis"]
if os.environ.get("BENCH_BACKENDS"):  # e.g. BENCH_BACKENDS=redis,sqlite
    BACKENDS = [b for b in BACKENDS if b in os.environ["BENCH_BACKENDS"].split(",")]
TARGET_MS = {"memory": 1.0, "redis": 1.0, "sqlite": 2.0, "postgresql": 2.0}
LAG_MS = 1.0
TWILIO_LATENCY = 0.1  # as Twilio: the reporter posts at most concurrency / latency a second


def _load(port: int, paths: list[str], think: float = THINK) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as handle:
        handle.write("\n".join(paths))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            str(port),
            handle.name,
            "--clients",
            str(CLIENTS),
            "--think",
            str(think),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def issue(server: Any, store_url: str, secret_key: str, count: int, twilio: Any) -> list[str]:
    """``count`` tokens bound to seeded SIDs: through the server for the memory store
    (``/_tickets``), else written to the shared store in bulk, as ``bind()`` writes them."""
    if store_url.startswith("memory"):
        tokens: list[str] = []
        while len(tokens) < count:
            n = min(20_000, count - len(tokens))
            tokens += server.request(f"/_tickets?n={n}").decode().split()
        return tokens
    from twilio_feedback.stores import store_from_url

    store = store_from_url(store_url)
    try:
        issued = list(
            fill.records(
                count,
                token_signer=fill.signer(secret_key),
                sids=twilio.sids,
                start=time.time(),
            )
        )
        fill.bulk_add(store, issued)
    finally:
        store.close()
    return [item.token for item in issued]


def store_urls(redis_server: Any, pg_server: Any) -> dict[str, str]:
    """A fresh store URL per backend."""
    redis_server.flush()
    return {
        "memory": "memory://?maxsize=2000000",
        "sqlite": f"sqlite:///{tempfile.mkdtemp(prefix='tf-inside-')}/bench.db",
        "postgresql": pg_server.fresh_database(),
        "redis": redis_server.url,
    }


def _load_average() -> str:
    import os

    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def _pcts(values: list[int]) -> str:
    return " / ".join(_ms(percentile(values, p)) for p in (50, 99, 99.9))


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    from .bench_stores import _servers
    from .serve import AppServer, baseline_env, remote_twilio

    confirms = 1_500 if quick else 10_000
    rounds = 2
    section = Section(
        "The confirm path measured inside the server (uvicorn, 50 keep-alive clients)"
    )
    started = time.perf_counter()
    load_before = _load_average()
    redis_server, pg_server = _servers()
    lag_rows = []
    # BENCH_BASELINE=<git ref>: each backend first runs that ref's library, then this tree's.
    baseline_ref = os.environ.get("BENCH_BASELINE") or None
    codes: list[str | None] = [baseline_ref, None] if baseline_ref else [None]
    baseline = baseline_env(baseline_ref) if baseline_ref else {}
    try:
        with remote_twilio(5_000, latency=TWILIO_LATENCY) as twilio:
            for backend, code in [(b, c) for b in BACKENDS for c in codes]:
                label = backend if code is None else f"{backend} (baseline: {code})"
                url = store_urls(redis_server, pg_server)[backend]
                secret_key = secrets.token_urlsafe(32)
                server = AppServer(
                    twilio, url, secret_key, timing=True, extra_env=baseline if code else None
                )
                try:
                    result = _measure(server, url, secret_key, twilio, confirms, rounds)
                finally:
                    server.stop()
                confirm, bare, mix_lag, bare_lag, tracker, offered = result
                added = [s[1] for s in confirm]
                target = TARGET_MS[backend]
                p99 = percentile(added, 99) / 1e6
                section.figures.append(
                    Figure(
                        f"{label}: time added per confirm, p50 / p99 / p99.9",
                        f"{_pcts(added)} ms",
                        f"{len(added):,} confirms; whole confirm request in the server "
                        f"{_pcts([s[3] for s in confirm])} ms",
                        f"p99 <= {target:g} ms",
                        "met" if p99 <= target else f"missed by {p99 - target:.2f} ms",
                    )
                )
                section.figures.append(
                    Figure(
                        f"{label}: bare route, same run: middleware pass-through / handler",
                        f"{_pcts([s[1] for s in bare])} / {_pcts([s[2] for s in bare])} ms",
                        f"{len(bare):,} requests, p50 / p99 / p99.9 each",
                    )
                )
                cpu_confirm = percentile([s[6] for s in confirm], 50)
                cpu_bare = percentile([s[6] for s in bare], 50)
                section.figures.append(
                    Figure(
                        f"{label}: CPU on the loop's thread per request, confirm / bare",
                        f"{cpu_confirm / 1e3:.0f} / {cpu_bare / 1e3:.0f} µs",
                        f"medians; the middleware's own: {(cpu_confirm - cpu_bare) / 1e3:.0f} µs "
                        "a confirm",
                    )
                )
                held_cpu = max(s[5] for s in confirm) / 1e6
                section.figures.append(
                    Figure(
                        f"{label}: longest the loop was held by one confirm, CPU (wall)",
                        f"{held_cpu:.3f} ms ({max(s[4] for s in confirm) / 1e6:.3f} ms)",
                        f"p99.9 {_ms(percentile([s[5] for s in confirm], 99.9))} ms "
                        f"({_ms(percentile([s[4] for s in confirm], 99.9))} ms); bare: max "
                        f"{_ms(max(s[5] for s in bare))} ms "
                        f"({_ms(max(s[4] for s in bare))} ms)",
                        f"<= {LAG_MS:g} ms",
                        "met" if held_cpu <= LAG_MS else f"missed by {held_cpu - LAG_MS:.2f} ms",
                    )
                )
                lag_rows.append((label, mix_lag, bare_lag))
                section.figures.append(
                    Figure(
                        f"{label}: loop lag while confirms run, p99.9 / max (bare only)",
                        f"{_ms(percentile(mix_lag, 99.9))} / {_ms(max(mix_lag))} ms "
                        f"({_ms(percentile(bare_lag, 99.9))} / {_ms(max(bare_lag))} ms)",
                        f"{len(mix_lag):,} wake-ups; p99 {_ms(percentile(mix_lag, 99))} ms "
                        f"({_ms(percentile(bare_lag, 99))} ms)",
                        f"<= {LAG_MS:g} ms",
                        "met" if percentile(mix_lag, 99.9) <= LAG_MS * 1e6 else "missed (p99.9)",
                    )
                )
                section.notes.append(
                    f"{label}: {tracker['confirmed']:,} confirmed, "
                    f"{tracker['duplicate'] + tracker['unknown'] + tracker['invalid']} not "
                    f"first-time (duplicate, unknown or invalid), {tracker['reported']:,} "
                    f"reported to FakeTwilio by the end; {offered:.0f} requests/s offered; the "
                    f"loop's thread waited runnable for a CPU {tracker['waited_pct']}% of the "
                    "time while confirms ran (schedstat: the other processes on the 2 cores); "
                    f"{tracker['gc']:,} garbage collections, the longest "
                    f"{tracker['gc_max_ms']} ms ({tracker['gc2']} full ones, the longest "
                    f"{tracker['gc2_max_ms']} ms)."
                )
    finally:
        redis_server.stop()
        pg_server.stop()
    section.notes += [
        "Time added = from entering FeedbackMiddleware to the wrapped app being called "
        "(`time.perf_counter_ns()` in two thin ASGI layers, one each side of the "
        "middleware), so it holds the token check, the store's confirm (awaited: other "
        "requests run meanwhile, and their steps count here as waiting), the reporter hand-"
        "off and the scope copy. The bare line shows the same layers on the bare route: "
        "the middleware's pass-through, and the route's handler (Starlette routing, "
        "handler, response).",
        "The loop held = the longest stretch a request's coroutine ran without yielding "
        "(each step timed, in the loop thread's CPU time, which leaves out time the "
        "process was not running or waited for the GIL, and in wall time, which does not). "
        "CPU per request = the CPU time of all of the request's steps on the loop's thread "
        "(not the reporter's threads, nor the worker threads the SQL stores' async twin "
        "uses). The lag = how late a task sleeping 1 ms wakes: it counts "
        "everything that keeps the loop from running, other requests' steps, garbage "
        "collection, and threads holding the GIL (the reporter's, and the SQL stores' "
        "worker threads); its reference is the same number of bare requests alone.",
        f"{CLIENTS} clients with keep-alive connections from another process, each pausing "
        f"a random 0-{2 * THINK * 1000:.0f} ms between requests (~500 requests/s offered: "
        f"below saturation, so the figures are the path's own cost, not a queue's); "
        f"{rounds} rounds of {confirms // rounds:,} confirms interleaved with as many bare "
        "requests, then as many bare requests alone; a warm-up not counted. uvicorn's "
        "default HTTP and loop (h11 and asyncio here: neither httptools nor uvloop is "
        f"installed). FakeTwilio answers in {TWILIO_LATENCY * 1000:.0f} ms from a process of "
        "its own, so the reporter (4 posts in flight) reports ~40 a second and holds the rest "
        "in its queue: its CPU barely shows here (the throughput section runs it flat out). "
        "The machine's 2 cores are shared with the load generator, FakeTwilio "
        "and the store servers (and other work on this machine).",
        f"{time.perf_counter() - started:.0f} s for this section; load average "
        f"{load_before} before, {_load_average()} after.",
    ]
    return section


def _measure(
    server: Any, url: str, secret_key: str, twilio: Any, confirms: int, rounds: int
) -> tuple[list[Any], list[Any], list[int], list[int], dict[str, int], float]:
    from .serve import schedstat

    per_round = confirms // rounds
    warm = issue(server, url, secret_key, 500, twilio)
    _load(server.port, [p for t in warm for p in (f"/confirm?id={t}", "/bare")])
    tokens = issue(server, url, secret_key, per_round * rounds, twilio)
    server.get("/_stats?reset=1")
    before = server.get("/_stats")["tracker"]
    confirm: list[Any] = []
    bare: list[Any] = []
    mix_lag: list[int] = []
    bare_lag: list[int] = []
    requests = seconds = waited = 0.0
    pauses: list[list[int]] = []
    for r in range(rounds):
        batch = tokens[r * per_round : (r + 1) * per_round]
        paths = [p for t in batch for p in (f"/confirm?id={t}", "/bare")]
        server.get("/_stats?reset=1")
        before_wait = schedstat(server.process.pid)[1]
        summary = _load(server.port, paths)
        waited += schedstat(server.process.pid)[1] - before_wait
        requests += summary["requests"]
        seconds += summary["seconds"]
        assert summary["statuses"] == {"200": len(paths)}, summary
        stats = server.get("/_stats?reset=1")
        pauses += stats["gc"]
        confirm += [s for s in stats["samples"] if s[0] == "confirm"]
        bare += [s for s in stats["samples"] if s[0] == "bare"]
        mix_lag += stats["lags"]
        _load(server.port, ["/bare"] * len(paths))
        stats = server.get("/_stats?reset=1")
        bare_lag += stats["lags"]
    server.request("/_stats")  # let the reporter catch up before counting
    deadline = time.monotonic() + 60
    while True:
        after = server.get("/_stats")["tracker"]
        if after["pending"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    counts = {k: after[k] - before.get(k, 0) for k in after}
    counts["waited_pct"] = round(100 * waited / seconds)
    full = [ns for generation, ns in pauses if generation == 2]
    counts["gc"] = len(pauses)
    counts["gc_max_ms"] = round(max((ns for _, ns in pauses), default=0) / 1e6, 1)
    counts["gc2"] = len(full)
    counts["gc2_max_ms"] = round(max(full, default=0) / 1e6, 1)
    return confirm, bare, mix_lag, bare_lag, counts, requests / seconds
