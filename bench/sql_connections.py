"""Connections the SQL store opens on PostgreSQL during bursts of async confirms.

``python -m bench.sql_connections [KEEP ...]``: one throwaway PostgreSQL and FakeTwilio; a
tracker at default settings (the thread reporter, 4 workers) binds 10,000 messages, then
confirms them in two bursts of 5,000 on one event loop, 200 at once, each burst flushed
(every confirmation reported). For each idle limit given (default: 5, the engine's
``pool_size``, then the store's own, ``pool_size + max_overflow``), run after run
alternately: the connections opened and closed per burst (the engine's ``connect``
event), and the most in use at once. Not part of ``python -m bench``: a tool for work on
the store's pool.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import sqlalchemy as sa

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.stores.sql import SQLStore
from twilio_feedback.testing import FakeTwilio

MESSAGES = 10_000
AT_ONCE = 200
ROUNDS = 3


def run(url: str, keep: int | None) -> str:
    store = SQLStore(url)
    raw: Any = store._raw
    if keep is not None:
        raw.keep = keep
    lock = threading.Lock()
    counts = {"opened": 0, "closed": 0, "in_use": 0, "peak": 0}
    sa.event.listen(store.engine, "connect", lambda *_: _add(lock, counts, "opened"))
    checkout, checkin, close = raw._checkout, raw._checkin, raw._close

    def counted_checkout() -> Any:
        conn = checkout()
        with lock:
            counts["in_use"] += 1
            counts["peak"] = max(counts["peak"], counts["in_use"])
        return conn

    def counted_checkin(conn: Any) -> None:
        _add(lock, counts, "in_use", -1)
        checkin(conn)

    def counted_close(conn: Any) -> None:
        _add(lock, counts, "closed")
        close(conn)

    raw._checkout, raw._checkin, raw._close = counted_checkout, counted_checkin, counted_close
    with FakeTwilio() as fake:
        tracker = FeedbackTracker(
            Settings(
                account_sid=fake.account_sid,
                auth_token=fake.auth_token,
                secret_key="bench-secret-key-0123456789-abcdefghij",
                store=store,
                api_base_url=fake.base_url,
            )
        )
        tickets = [tracker.ticket() for _ in range(MESSAGES)]
        for ticket, sid in zip(tickets, fake.add_messages(MESSAGES), strict=True):
            tracker.bind(ticket, sid)

        async def burst(part: list[Any]) -> float:
            gate = asyncio.Semaphore(AT_ONCE)

            async def one(token: str) -> None:
                async with gate:
                    assert (await tracker.confirm_token_async(token)).confirmed

            started = time.monotonic()
            await asyncio.gather(*(one(ticket.token) for ticket in part))
            await tracker.astore.aclose()
            return time.monotonic() - started

        bursts = []
        half = MESSAGES // 2
        for part in (tickets[:half], tickets[half:]):
            opened, closed = counts["opened"], counts["closed"]
            took = asyncio.run(burst(part))
            assert tracker.flush(60) == 0
            bursts.append(
                f"{counts['opened'] - opened} opened, {counts['closed'] - closed} closed"
                f" ({took:.1f} s)"
            )
        tracker.close(5)
    return f"keep {raw.keep:>2}, at most {counts['peak']} in use: " + "; ".join(bursts)


def _add(lock: threading.Lock, counts: dict[str, int], name: str, by: int = 1) -> None:
    with lock:
        counts[name] += by


def main() -> None:
    from tests.servers import PostgresServer

    keeps: list[int | None] = [int(arg) for arg in sys.argv[1:]] or [5, None]
    server = PostgresServer()
    try:
        for _ in range(ROUNDS):
            for keep in keeps:
                print(run(server.fresh_database(), keep), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
