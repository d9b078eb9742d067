"""How the SQL store runs its statements: on the driver's own pooled connections (one
statement a confirm still), its async twin in the store's threads, restarts, forks and a
busy SQLite."""

from __future__ import annotations

import asyncio
import contextvars
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from twilio_feedback import Record, State
from twilio_feedback.stores import AsyncStores
from twilio_feedback.stores._sqlraw import StoreThreadAsyncStore
from twilio_feedback.stores.sql import SQLStore

from ..servers import PostgresServer, wait_until
from .child import in_forked_child

SID = "SM" + "a" * 32
postgres = pytest.mark.postgres


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[SQLStore]:
    store = SQLStore(postgres_url)
    yield store
    store.close()


def _pending(store: SQLStore, *names: str, now: float, **fields: Any) -> None:
    for name in names:
        store.add(Record(name, expires_at=now + 600, message_sid=SID, **fields))


def _confirm_args(now: float) -> dict[str, float]:
    return {"now": now, "lease_until": now + 60, "keep_until": now + 60}


# -- one statement a confirm, on the driver's connections -------------------------------


def test_sqlite_confirm_is_one_statement_on_the_drivers_connection(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path}/feedback.db")
    traced: list[str] = []
    # A pool event, not a statement listener: the store keeps its own execution path.
    sa.event.listen(
        store.engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(traced.append)
    )
    now = time.time()
    _pending(store, "x", "y", now=now)
    _pending(store, "c", now=now, country="US", sender="+15550001111")
    for name, data in (("x", 1), ("c", 2)):  # a counted confirm upserts its day's row too
        traced.clear()
        assert store.confirm(name, **_confirm_args(now))[0]
        statements = [line.split()[0].upper() for line in traced]
        assert statements[0] == "BEGIN", traced
        assert statements[-1] == "COMMIT", traced
        assert len(statements) == data + 2, traced
    store.close()


@postgres
def test_postgres_confirm_is_one_round_trip_on_the_drivers_connection(
    postgres_url: str, tmp_path: Path
) -> None:
    from psycopg.pq import Trace

    store = SQLStore(postgres_url)
    trace = (tmp_path / "libpq.trace").open("w")

    def on_connect(dbapi: Any, _: Any) -> None:
        dbapi.pgconn.trace(trace.fileno())
        dbapi.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)

    sa.event.listen(store.engine, "connect", on_connect)
    now = time.time()
    _pending(store, "x", now=now, country="US", sender="+15550001111")
    for won in (True, False):  # a loser is answered in the same statement
        trace.flush()
        start = (tmp_path / "libpq.trace").stat().st_size
        assert store.confirm("x", **_confirm_args(now))[0] is won
        trace.flush()
        sent = (tmp_path / "libpq.trace").read_text()[start:].splitlines()
        trips = [
            line
            for line in sent
            if line.startswith("F") and ("\tSync" in line or "\tQuery" in line)
        ]
        assert len(trips) == 1, sent
    store.close()
    trace.close()


def test_statement_listeners_see_every_statement(tmp_path: Path) -> None:
    # Instrumentation on the engine (tracing, query counters) keeps seeing the store's
    # statements: they then go through SQLAlchemy.
    store = SQLStore(f"sqlite:///{tmp_path}/feedback.db")
    seen: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    now = time.time()
    _pending(store, "x", now=now)
    assert store.confirm("x", **_confirm_args(now))[0]
    assert any(statement.lstrip().upper().startswith("UPDATE") for statement in seen), seen
    store.close()


# -- the async twin on PostgreSQL --------------------------------------------------------


@postgres
async def test_postgres_async_twin_under_concurrency_on_one_loop(
    pg_store: SQLStore, postgres_url: str
) -> None:
    twin = pg_store.as_async()
    assert isinstance(twin, StoreThreadAsyncStore)
    now = time.time()
    try:
        await asyncio.gather(*(twin.add(Record(f"t{n}", expires_at=now + 600)) for n in range(40)))
        attached = await asyncio.gather(*(twin.attach_sid(f"t{n}", SID, None) for n in range(40)))
        assert all(record is not None and record.message_sid == SID for record in attached)
        # 39 distinct confirms and 20 of one token at once: every distinct one wins, one of
        # the same token does, the others are told it is confirmed.
        results = await asyncio.gather(
            *(twin.confirm(f"t{n}", **_confirm_args(now)) for n in range(1, 40)),
            *(twin.confirm("t0", **_confirm_args(now)) for _ in range(20)),
        )
        assert all(won for won, _ in results[:39])
        same = results[39:]
        assert sum(won for won, _ in same) == 1
        assert all(record is not None and record.state is State.CONFIRMED for _, record in same)
        await twin.delete("t1")
        assert pg_store.get("t1") is None
        assert await twin.confirm("gone", **_confirm_args(now)) == (False, None)
        # In the store's threads, on no more connections than the engine's pool keeps.
        names = {thread.name for thread in threading.enumerate()}
        assert "twilio-feedback-sql" in names
        url = postgres_url.replace("postgresql://", "postgresql+psycopg://")
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.connect() as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            opened = conn.execute(sa.text(query)).scalar()
        assert opened is not None
        assert opened <= pg_store.engine.pool.size() + 1  # type: ignore[attr-defined]
    finally:
        await twin.aclose()


def _burst(store: SQLStore, tracking_id: str, now: float, awaited: int, threads: int) -> None:
    """``awaited`` confirms of the async twin on one loop and ``threads`` sync ones (the
    reporter's workers, its scheduler and heartbeat), all holding a connection at once."""
    twin = store.as_async()

    async def on_the_loop() -> None:
        await asyncio.gather(
            *(twin.confirm(tracking_id, **_confirm_args(now)) for _ in range(awaited))
        )

    callers = [threading.Thread(target=asyncio.run, args=(on_the_loop(),))]
    callers += [
        threading.Thread(target=store.confirm, args=(tracking_id,), kwargs=_confirm_args(now))
        for _ in range(threads)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)


@postgres
def test_postgres_a_burst_keeps_its_connections_for_the_next(
    pg_store: SQLStore, postgres_url: str
) -> None:
    # The async twin's 5 threads and the reporter's (4 workers, its scheduler and
    # heartbeat) may all hold a connection at once: a connection is a PostgreSQL process
    # forked and milliseconds of handshake, so the store keeps up to the engine's
    # pool_size + max_overflow of them for the next burst (and no more).
    import psycopg

    now = time.time()
    rounds = [f"r{n}" for n in range(4)]
    _pending(pg_store, *rounds, now=now)
    opened: list[int] = []
    sa.event.listen(pg_store.engine, "connect", lambda *_: opened.append(1))
    watcher = psycopg.connect(postgres_url, autocommit=True)
    locker = psycopg.connect(postgres_url)

    def sessions(waiting: bool) -> int:
        query = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid NOT IN (pg_backend_pid(), %s)"
            + (" AND wait_event_type = 'Lock'" if waiting else "")
        )
        found = watcher.execute(query, (locker.info.backend_pid,)).fetchone()
        return int(found[0]) if found else 0

    table = pg_store.table.name
    per_round: list[int] = []
    try:
        for n, (tracking_id, held) in enumerate(zip(rounds, (11, 11, 11, 20), strict=True)):
            before = len(opened)
            locker.execute(
                f"SELECT 1 FROM {table} WHERE tracking_id = %s FOR UPDATE", (tracking_id,)
            )
            burst = threading.Thread(target=_burst, args=(pg_store, tracking_id, now, 5, held - 5))
            burst.start()
            wait_until(lambda held=held: sessions(True) >= held, 10, f"{held} waiting, round {n}")
            locker.commit()
            burst.join(30)
            assert not burst.is_alive()
            per_round.append(len(opened) - before)
            assert pg_store.get(tracking_id) is not None
        pool: Any = pg_store.engine.pool
        bound = pool.size() + pool._max_overflow
        assert bound == 15
        # The first burst opened what it needed, the next two none; 20 at once open 9 more,
        # and the store keeps no more than the bound of them.
        assert per_round[1:3] == [0, 0], per_round
        assert sum(per_round[:3]) <= bound, per_round
        assert per_round[3] == 20 - 11, per_round
        wait_until(lambda: sessions(False) == bound, 10, f"{bound} sessions left")
    finally:
        locker.close()
        watcher.close()


@postgres
def test_postgres_async_twins_of_two_loops(pg_store: SQLStore) -> None:
    stores = AsyncStores(pg_store)
    now = time.time()
    _pending(pg_store, *(f"t{n}" for n in range(30)), now=now)
    wins: list[bool] = []
    twins: list[Any] = []

    async def confirm_all() -> None:
        twin = stores.current()
        twins.append(twin)
        results = await asyncio.gather(
            *(twin.confirm(f"t{n}", **_confirm_args(now)) for n in range(30))
        )
        wins.extend(won for won, _ in results)
        await stores.aclose()

    threads = [threading.Thread(target=asyncio.run, args=(confirm_all(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(wins) == 60
    assert wins.count(True) == 30  # each record won once, whichever loop won it
    assert twins[0] is not twins[1]


@postgres
@pytest.mark.slow
def test_postgres_restart_mid_run_then_recovery_on_the_async_twin() -> None:
    server = PostgresServer()
    try:
        store = SQLStore(server.fresh_database())
        now = time.time()
        _pending(store, "a", "b", "c", now=now)
        twin = store.as_async()

        async def run() -> None:
            assert (await twin.confirm("a", **_confirm_args(now)))[0]
            server.halt()
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError):
                await twin.confirm("b", **_confirm_args(now))
            assert time.monotonic() - started < 10  # a clear error, not a hang
            server.start()
            # The pooled connection died with the server: one retry on a fresh one.
            won, record = await twin.confirm("b", **_confirm_args(now))
            assert won
            assert record is not None
            assert record.state is State.CONFIRMED
            assert (await twin.confirm("c", **_confirm_args(now)))[0]
            await twin.aclose()

        asyncio.run(run())
        assert store.confirm("c", **_confirm_args(now))[0] is False  # the sync pool too
        store.close()
    finally:
        server.stop()


REQUEST: contextvars.ContextVar[str | None] = contextvars.ContextVar("request", default=None)


def test_the_async_twin_runs_in_the_awaiting_tasks_context(tmp_path: Path) -> None:
    # As asyncio.to_thread does: an OpenTelemetry span, a request-scoped variable, an
    # engine event's handler see the awaiting task's context in the store's thread, and
    # what a call sets there stays there.
    store = SQLStore(f"sqlite:///{tmp_path}/feedback.db")
    on_connect: list[str | None] = []
    sa.event.listen(store.engine, "connect", lambda *_: on_connect.append(REQUEST.get()))
    seen: dict[str, str | None] = {}
    confirm, delete = store.confirm, store.delete

    def confirming(tracking_id: str, **kwargs: Any) -> Any:
        seen[tracking_id] = REQUEST.get()
        REQUEST.set("set in the store's thread")
        return confirm(tracking_id, **kwargs)

    def deleting(tracking_id: str) -> None:
        seen[f"delete {tracking_id}"] = REQUEST.get()
        delete(tracking_id)

    store.confirm = confirming  # type: ignore[method-assign]
    store.delete = deleting  # type: ignore[method-assign]
    now = time.time()
    twin = store.as_async()
    assert isinstance(twin, StoreThreadAsyncStore)

    async def request(n: int) -> bool:
        REQUEST.set(f"request {n}")
        await twin.add(Record(f"t{n}", expires_at=now + 600, message_sid=SID))
        won, _ = await twin.confirm(f"t{n}", **_confirm_args(now))
        assert REQUEST.get() == f"request {n}"
        return won

    async def run() -> list[bool]:
        wins = await asyncio.gather(*(request(n) for n in range(10)))
        await twin.delete("t0")  # from a task that set nothing
        return wins

    assert asyncio.run(run()) == [True] * 10
    assert seen == {**{f"t{n}": f"request {n}" for n in range(10)}, "delete t0": None}
    assert on_connect, "the store's first call opens a connection"
    assert set(on_connect) <= {f"request {n}" for n in range(10)}, on_connect
    store.close()


# -- forks ----------------------------------------------------------------------------


def _backend_pid(store: SQLStore) -> int:
    row = store._call(lambda s: s.first(sa.select(sa.func.pg_backend_pid().label("pid"))))
    return int(row["pid"])


@postgres
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_share_the_parents_connections(pg_store: SQLStore) -> None:
    now = time.time()
    _pending(pg_store, "parent", "child", now=now)
    parent = _backend_pid(pg_store)

    def child() -> str:
        won = pg_store.confirm("child", **_confirm_args(now))[0]
        return f"{int(won)} {_backend_pid(pg_store)}"

    won, child_id = in_forked_child(child).split()
    assert won == "1"
    assert int(child_id) != parent
    # The child's exit closed nothing of the parent's: same session, still working.
    assert pg_store.confirm("parent", **_confirm_args(now))[0]
    assert _backend_pid(pg_store) == parent


# -- a busy SQLite --------------------------------------------------------------------


def test_a_busy_sqlite_waits_its_busy_timeout_then_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    store = SQLStore(f"sqlite:///{path}", busy_timeout=0.2)
    now = time.time()
    _pending(store, "x", now=now)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        for attempt in (
            lambda: store.confirm("x", **_confirm_args(now)),
            lambda: asyncio.run(store.as_async().confirm("x", **_confirm_args(now))),
        ):
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                attempt()
            assert 0.15 < time.monotonic() - started < 5
    finally:
        other.execute("ROLLBACK")
        other.close()
    # Nothing was left half done: the lock released, the confirm goes through.
    assert store.confirm("x", **_confirm_args(now))[0]
    assert store.confirm("x", **_confirm_args(now))[0] is False
    store.close()


def test_the_sqlite_async_twin_shares_one_thread(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path}/feedback.db")
    now = time.time()
    _pending(store, *(f"t{n}" for n in range(20)), now=now)
    ran_in: set[str] = set()
    confirm = store.confirm

    def recording(*args: Any, **kwargs: Any) -> Any:
        ran_in.add(threading.current_thread().name)
        return confirm(*args, **kwargs)

    store.confirm = recording  # type: ignore[method-assign]

    async def run() -> list[bool]:
        twin = store.as_async()
        results = await asyncio.gather(
            *(twin.confirm(f"t{n % 10}", **_confirm_args(now)) for n in range(20))
        )
        return [won for won, _ in results]

    wins = asyncio.run(run())
    assert wins.count(True) == 10
    assert ran_in == {"twilio-feedback-sql"}
    store.close()
