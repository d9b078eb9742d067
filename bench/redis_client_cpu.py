"""CPU per call of the Redis store's confirm (async twin, sync) and mark_reported, by client.

``python -m bench.redis_client_cpu``: one throwaway redis-server; in a process of its own
each, the async twin on redis.asyncio without hiredis, on redis.asyncio with hiredis, and
on the lean connection (stores/_resp.py); ``time.process_time`` over thousands of calls,
awaited one at a time and twenty at once, then the sync store's ``confirm`` on other
records and ``mark_reported`` on the confirmed ones (on redis-py's sync client, with or
without hiredis, in the first two; on the lean blocking connections in the third). Prints
the medians of 5 rounds (CPU of this process only: Redis runs in its own). Not part of
``python -m bench``: a tool for work on the store's client.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

CALLS = 4_000
ROUNDS = 5
SID = "SM" + "a" * 32
VARIANTS = {
    "redis.asyncio, no hiredis": "redis-py-nohiredis",
    "redis.asyncio, hiredis": "redis-py",
    "lean connection (hiredis)": "lean",
}


async def _confirms(store: Any, now: float) -> tuple[float, float, str]:
    """CPU per confirm on the twin: one at a time, then twenty at once; the client's type."""
    twin: Any = store.as_async()
    await twin.confirm("t0", now=now, lease_until=now, keep_until=now + 900)
    started = time.process_time()
    for n in range(1, CALLS):
        await twin.confirm(f"t{n}", now=now, lease_until=now, keep_until=now + 900)
    one = (time.process_time() - started) / (CALLS - 1)
    started = time.process_time()
    for first in range(CALLS, 2 * CALLS, 20):
        await asyncio.gather(
            *(
                twin.confirm(f"t{n}", now=now, lease_until=now, keep_until=now + 900)
                for n in range(first, first + 20)
            )
        )
    twenty = (time.process_time() - started) / CALLS
    client = type(twin.client).__name__
    await twin.aclose()
    if store.async_client is not None:
        await store.async_client.aclose()
    return one, twenty, client


def _measure(url: str, variant: str) -> dict[str, list[float]]:
    import redis
    import redis.asyncio

    from twilio_feedback import Record
    from twilio_feedback.stores.redis import RedisStore, pack_record

    figures: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        if variant == "lean":
            store = RedisStore(url)
        else:  # the app's clients (a new event loop each round): the twin on redis.asyncio
            store = RedisStore(
                redis.Redis.from_url(url), async_client=redis.asyncio.Redis.from_url(url)
            )
        store.client.flushall()
        now = time.time()
        with store.client.pipeline(transaction=False) as pipe:
            for tracking_id in [
                *(f"t{n}" for n in range(2 * CALLS)),
                *(f"s{n}" for n in range(CALLS)),
            ]:
                record = Record(tracking_id, expires_at=now + 600, message_sid=SID, created_at=now)
                pipe.set(store.key(record.tracking_id), pack_record(record))
            pipe.execute()

        one, twenty, client = asyncio.run(_confirms(store, now))
        started = time.process_time()
        for n in range(CALLS):
            assert store.confirm(f"s{n}", now=now, lease_until=now, keep_until=now + 900)[0]
        sync_confirm = (time.process_time() - started) / CALLS
        store.mark_reported("t0", SID)
        started = time.process_time()
        for n in range(1, CALLS):
            assert store.mark_reported(f"t{n}", SID)
        reported = (time.process_time() - started) / (CALLS - 1)
        for name, value in (
            (f"async confirm, one at a time ({client})", one),
            (f"async confirm, twenty at once ({client})", twenty),
            ("sync confirm", sync_confirm),
            ("sync mark_reported", reported),
        ):
            figures.setdefault(name, []).append(value * 1e6)
        store.close()
        if variant != "lean":
            store.client.close()
    return figures


def main() -> None:
    """Run every variant against one redis-server and print the medians."""
    if len(sys.argv) == 3:  # a child: one variant
        url, variant = sys.argv[1:]
        if variant == "redis-py-nohiredis":
            sys.modules["hiredis"] = None  # type: ignore[assignment]
        print(json.dumps(_measure(url, variant)))
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    from tests.servers import RedisServer

    server = RedisServer()
    try:
        print(f"{CALLS:,} calls a round, medians of {ROUNDS} rounds, load {os.getloadavg()}")
        for label, variant in VARIANTS.items():
            done = subprocess.run(
                [sys.executable, "-m", "bench.redis_client_cpu", server.url, variant],
                cwd=root,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise SystemExit(f"{label}: {done.stderr}")
            print(label)
            for name, values in json.loads(done.stdout).items():
                values.sort()
                low, high = values[0], values[-1]
                print(f"  {name}: {values[len(values) // 2]:.1f} µs ({low:.1f}-{high:.1f})")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
