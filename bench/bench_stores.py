"""Stores: confirm and claim latency, round trips per confirm, memory per record."""

from __future__ import annotations

import gc
import secrets
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from .common import Figure, Section, interleaved, median, spread


def _servers() -> tuple[Any, Any]:
    from tests.servers import PostgresServer, RedisServer

    return RedisServer(), PostgresServer()


def _fill(store: Any, prefix: str, count: int, *, confirmed: bool = False) -> list[str]:
    from twilio_feedback import Record

    now = time.time()
    ids = [f"{prefix}{n}-{secrets.token_hex(4)}" for n in range(count)]
    for tracking_id in ids:
        store.add(Record(tracking_id, expires_at=now + 600, message_sid="SM" + "a" * 32))
        if confirmed:
            store.confirm(tracking_id, now=now, lease_until=now - 1, keep_until=now + 600)
    return ids


def _confirm_case(store: Any, count: int) -> Callable[[], float]:
    def case() -> float:
        ids = _fill(store, "c", count)
        start = time.perf_counter()
        for tracking_id in ids:
            now = time.time()
            store.confirm(tracking_id, now=now, lease_until=now + 60, keep_until=now + 600)
        return (time.perf_counter() - start) / count

    return case


def _claim_case(store: Any, count: int) -> Callable[[], float]:
    def case() -> float:
        _fill(store, "q", count, confirmed=True)
        start = time.perf_counter()
        taken = 0
        while taken < count:
            now = time.time()
            got = store.claim(now=now, lease_until=now + 600, limit=100)
            if not got:
                break
            taken += len(got)
        return (time.perf_counter() - start) / max(taken, 1)

    return case


def _round_trips(backend: str, store: Any, record: Any = None) -> int:
    """Round trips of one confirm of ``record`` (a plain pending record by default)."""
    from twilio_feedback import Record

    now = time.time()
    store.add(record or Record("rt", expires_at=now + 60, message_sid="SM" + "a" * 32))
    if backend in ("sqlite", "postgresql"):
        from sqlalchemy import event

        seen: list[Any] = []

        def count(*args: Any) -> None:
            seen.append(args[2])

        event.listen(store.engine, "before_cursor_execute", count)
        store.confirm("rt", now=now, lease_until=now + 60, keep_until=now + 60)
        event.remove(store.engine, "before_cursor_execute", count)
        return len(seen)
    if backend == "redis":
        import redis.connection

        sent: list[Any] = []
        original = redis.connection.Connection.send_packed_command

        def counting(self: Any, command: Any, check_health: bool = True) -> None:
            sent.append(command)
            original(self, command, check_health)

        store.confirm("warm", now=now, lease_until=now, keep_until=now)  # load the script
        redis.connection.Connection.send_packed_command = counting  # type: ignore[method-assign]
        try:
            store.confirm("rt", now=now, lease_until=now + 60, keep_until=now + 60)
        finally:
            redis.connection.Connection.send_packed_command = original  # type: ignore[method-assign]
        return len(sent)
    return 0  # in process


def _memory_per_record(count: int) -> float:
    from twilio_feedback import Record
    from twilio_feedback.stores.memory import MemoryStore
    from twilio_feedback.tokens import TokenSigner

    signer = TokenSigner(secrets.token_urlsafe(32))
    account = "AC" + "b" * 32
    gc.collect()
    tracemalloc.start()
    store = MemoryStore(maxsize=count + 1)
    base = tracemalloc.get_traced_memory()[0]
    now = time.time()
    for _ in range(count):
        tracking_id, _token = signer.issue()
        store.add(
            Record(
                tracking_id,
                expires_at=now + 3600,
                message_sid="SM" + secrets.token_hex(16),
                account_sid=account,
                created_at=now,
            )
        )
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(store) == count
    return used / count


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    from twilio_feedback.stores import store_from_url
    from twilio_feedback.stores.memory import MemoryStore

    redis_server, pg_server = _servers()
    stores = {
        "memory": MemoryStore(),
        "sqlite": store_from_url(f"sqlite:///{tempfile.mkdtemp()}/bench.db"),
        "postgresql": store_from_url(pg_server.fresh_database()),
        "redis": store_from_url(redis_server.url),
    }
    count = 200 if quick else 1_000
    repeats = 3 if quick else 7
    section = Section("Stores")
    try:
        cases: dict[str, Callable[[], float]] = {}
        for name, store in stores.items():
            cases[f"{name} confirm"] = _confirm_case(store, count)
            cases[f"{name} claim"] = _claim_case(store, count)
        samples = interleaved(cases, repeats)
        for name, store in stores.items():
            for op in ("confirm", "claim"):
                values = samples[f"{name} {op}"]
                lo, hi = spread(values)
                unit = "per confirm" if op == "confirm" else "per record claimed (batches of 100)"
                section.figures.append(
                    Figure(
                        f"{name}: {op}",
                        f"{median(values) * 1e6:.1f} µs",
                        f"{lo * 1e6:.1f}-{hi * 1e6:.1f}",
                        unit,
                    )
                )
            trips = _round_trips(name, store)
            section.figures.append(
                Figure(
                    f"{name}: round trips per confirm",
                    str(trips) if name != "memory" else "0 (in process)",
                    target="1",
                    verdict="met" if trips <= 1 else "missed",
                )
            )
        records = 100_000 if quick else 1_000_000
        per_record = _memory_per_record(records)
        section.figures.append(
            Figure(
                f"memory store: bytes per record at {records:,} records",
                f"{per_record:.0f} B",
                target="<= 1024 B",
                verdict="met" if per_record <= 1024 else "missed",
            )
        )
        section.notes.append(
            "Servers on 127.0.0.1 on this machine (PostgreSQL with fsync=off, Redis without "
            "persistence), so the figures are each backend's own cost plus loopback, not a "
            "network's. SQLite in WAL mode with synchronous=NORMAL."
        )
    finally:
        for store in stores.values():
            store.close()
        redis_server.stop()
        pg_server.stop()
    return section
