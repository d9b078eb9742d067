"""Confirm latency under uvicorn at 50 concurrent clients, with Twilio answering in 1 s:
the bare route, the route behind the middleware, and Twilio's guide (inline post)."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import subprocess
import sys
import time

from .common import Figure, Section, percentile

CLIENTS = 50
THINK = 0.5  # mean seconds a client waits between requests: 100 requests/s offered in all
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120"


async def _load(base: str, paths: list[str]) -> list[float]:
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)
    times: list[float] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, headers={"User-Agent": UA}, timeout=30
    ) as http:

        async def client() -> None:
            while not queue.empty():
                path = queue.get_nowait()
                start = time.perf_counter()
                response = await http.get(path)
                times.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text
                assert response.text.startswith("ok"), response.text
                # Pacing, jittered so the 50 clients do not fall into step and arrive in
                # bursts (which would measure the burst's queue, not the route).
                await asyncio.sleep(random.uniform(0, 2 * THINK))

        # The load generator's own garbage collections would show up as latency of the
        # server it measures: keep them out while it runs.
        gc.collect()
        gc.disable()
        try:
            await asyncio.gather(*(client() for _ in range(CLIENTS)))
        finally:
            gc.enable()
    return times


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    import httpx

    from twilio_feedback.testing import FakeTwilio

    per_round = 500 if quick else 1_000
    rounds = 2 if quick else 4
    inline_count = 100 if quick else 200
    section = Section("Confirm latency under uvicorn (50 concurrent clients, Twilio takes 1 s)")
    with FakeTwilio() as fake:
        sids = fake.add_messages(per_round * rounds + inline_count + 10)
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
            handle.write("\n".join(sids[: per_round * rounds + 10]))
            sids_file = handle.name
        port = _port()
        env = {
            **os.environ,
            "BENCH_TWILIO_URL": fake.base_url,
            "BENCH_ACCOUNT_SID": fake.account_sid,
            "BENCH_AUTH_TOKEN": fake.auth_token,
            "BENCH_SIDS_FILE": sids_file,
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.latency_app:app",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(base + "/bare", timeout=1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            asyncio.run(_load(base, ["/bare"] * CLIENTS * 4))  # warm-up: connections, caches
            fake.latency = 1.0
            results: dict[str, list[float]] = {"bare": [], "confirm": []}
            for _ in range(rounds):
                tokens = httpx.get(f"{base}/_tickets?n={per_round}", timeout=30).json()
                results["bare"] += asyncio.run(_load(base, ["/bare"] * per_round))
                results["confirm"] += asyncio.run(_load(base, [f"/confirm?id={t}" for t in tokens]))
            inline_sids = sids[per_round * rounds + 10 :]
            results["inline"] = asyncio.run(_load(base, [f"/inline?sid={s}" for s in inline_sids]))
            reported = len(fake.feedback)
        finally:
            server.terminate()
            server.wait(10)
    p: dict[str, tuple[float, float]] = {
        name: (percentile(values, 50), percentile(values, 99)) for name, values in results.items()
    }
    labels = {
        "bare": "(a) bare route",
        "confirm": "(b) confirm route behind FeedbackMiddleware",
        "inline": "(c) Twilio's guide: feedback.create inline",
    }
    for name, label in labels.items():
        p50, p99 = p[name]
        section.figures.append(
            Figure(
                label,
                f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms",
                f"{len(results[name])} requests",
            )
        )
    gap = (p["confirm"][1] - p["bare"][1]) * 1000
    section.figures.append(
        Figure(
            "p99 (b) - p99 (a)",
            f"{gap:.2f} ms",
            target="<= 2 ms",
            verdict="met" if gap <= 2 else "missed",
        )
    )
    section.notes.append(
        f"{CLIENTS} clients with keep-alive connections, each pausing a random 0-"
        f"{2 * THINK * 1000:.0f} ms between requests (so they do not fall into step and "
        "arrive in bursts), keeping the server below saturation: the percentiles show the "
        "route's own latency rather than queueing. A warm-up round is not counted."
    )
    section.notes.append(
        f"Rounds of {per_round} bare and {per_round} confirm requests alternate ({rounds} "
        "rounds); every confirm is a first, winning confirmation of a distinct token, and "
        f"the feedback goes out in the background ({reported} reported by the end of the run)."
    )
    return section
