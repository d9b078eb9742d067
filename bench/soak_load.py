"""The soak's load generator, in a process of its own: ``python -m bench.soak_load PLAN
RESULTS``.

PLAN is a JSON file: ``base_url``, ``rate`` (requests per second), ``user_agents`` and
``requests``, each ``[method, path, user agent index, form body or null]``. Request ``i``
is sent at ``t0 + i / rate`` whatever became of the earlier ones (an open loop: a slow
server does not slow the offered load down). Prints ``ready`` once imported, then ``t0``
(a ``time.time()``) when the schedule starts; writes RESULTS, one
``[status or null, result status or null, seconds, lateness, error or null]`` per request
in plan order (error ``skipped``: not sent, the generator had fallen more than
:data:`BEHIND` behind), and ``t0`` and ``t_end``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from typing import Any

import httpx

CONNECTIONS = 200
TIMEOUT = 20.0
BEHIND = 1.0
"""A request that could not be sent within this many seconds of its time is skipped (its
result says ``skipped``): after a stall (a starved machine) the generator goes on at the
planned rate instead of sending everything it owes in one burst."""


async def _one(
    http: httpx.AsyncClient, request: list[Any], agents: list[str], lateness: float
) -> list[Any]:
    method, path, agent, form = request
    headers = {"User-Agent": agents[agent]}
    content = None
    if form is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        content = form.encode()
    start = time.perf_counter()
    try:
        response = await http.request(method, path, headers=headers, content=content)
    except httpx.HTTPError as exc:
        return [None, None, time.perf_counter() - start, lateness, type(exc).__name__]
    elapsed = time.perf_counter() - start
    status = None
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            status = body.get("status")
    return [response.status_code, status, elapsed, lateness, None]


def _skipped(lateness: float) -> asyncio.Future[list[Any]]:
    done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    done.set_result([None, None, 0.0, lateness, "skipped"])
    return done


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    rate = float(plan["rate"])
    requests: list[list[Any]] = plan["requests"]
    agents: list[str] = plan["user_agents"]
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=plan["base_url"], limits=limits, timeout=TIMEOUT) as http:
        loop = asyncio.get_running_loop()
        t0 = time.time() + 0.2
        print(json.dumps({"t0": t0}), flush=True)
        start = loop.time() + (t0 - time.time())
        tasks = []
        for i, request in enumerate(requests):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness = max(0.0, loop.time() - due)
            if lateness > BEHIND:
                tasks.append(_skipped(lateness))
            else:
                tasks.append(asyncio.create_task(_one(http, request, agents, lateness)))
        t_end = time.time()
        results = await asyncio.gather(*tasks)
    return {"t0": t0, "t_end": t_end, "results": results}


def main() -> None:
    with open(sys.argv[1]) as handle:
        plan = json.load(handle)
    print("ready", flush=True)
    # The generator's own collections would show as pauses in its pacing.
    gc.collect()
    gc.freeze()
    out = asyncio.run(run(plan))
    with open(sys.argv[2], "w") as handle:
        json.dump(out, handle)


if __name__ == "__main__":
    main()
