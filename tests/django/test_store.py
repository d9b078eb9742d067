"""The ``django://`` store: the conformance suite on SQLite and PostgreSQL through Django's
own connections, the URL, the databases it refuses, and its connections' lifecycle."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import psycopg
import pytest
from django.db import connections, transaction
from django.db.utils import ConnectionHandler

from twilio_feedback.django.store import DjangoStore
from twilio_feedback.errors import ConfigurationError
from twilio_feedback.records import Record
from twilio_feedback.stores import store_from_url
from twilio_feedback.testing.conformance import StoreConformance

from .conftest import PG, clear, needs_postgres
from .shared import open_store

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _alias(backend: str, databases: dict[str, Any]) -> str:
    if backend == "postgres":
        needs_postgres(databases)
        return PG
    return "default"


class TestDjangoStore(StoreConformance):
    @pytest.fixture(params=BACKENDS)
    def store(
        self, request: pytest.FixtureRequest, django_project: dict[str, Any]
    ) -> Iterator[DjangoStore]:
        alias = _alias(request.param, django_project)
        clear(alias)
        store = DjangoStore(alias)
        yield store
        store.close()

    @pytest.fixture
    def store_factory(self, store: DjangoStore, django_project: dict[str, Any]) -> Any:
        return functools.partial(open_store, _plain(django_project), store.alias)


def _plain(databases: dict[str, Any]) -> dict[str, Any]:
    """``DATABASES`` as the test configured it, without what Django added (picklable)."""
    keys = ("ENGINE", "NAME", "USER", "HOST", "PORT", "OPTIONS")
    return {alias: {k: v for k, v in db.items() if k in keys} for alias, db in databases.items()}


def test_urls_name_a_database_alias(django_project: dict[str, Any]) -> None:
    assert store_from_url("django://").alias == "default"  # type: ignore[attr-defined]
    assert DjangoStore.from_url("django://default").alias == "default"
    for url in ("django://default/table", "django://default?x=1", "django:///path"):
        with pytest.raises(ConfigurationError, match="names a database alias"):
            DjangoStore.from_url(url)


def test_an_unknown_alias_is_refused(django_project: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="there is no 'replica' database in DATABASES"):
        DjangoStore.from_url("django://replica")


def test_other_databases_are_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    dummy = ConnectionHandler({"default": {"ENGINE": "django.db.backends.dummy"}})
    monkeypatch.setattr("twilio_feedback.django.store.connections", dummy)
    with pytest.raises(ConfigurationError, match="runs on PostgreSQL and SQLite"):
        DjangoStore("default")


def _record(tracking_id: str) -> Record:
    return Record(tracking_id, expires_at=4e9, created_at=1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_connections_of_ended_threads_are_closed(
    backend: str, django_project: dict[str, Any]
) -> None:
    alias = _alias(backend, django_project)
    clear(alias)
    store = DjangoStore(alias)
    used: list[Any] = []

    def work() -> None:
        store.add(_record(f"t{len(used)}"))
        used.append(connections[alias])

    for _ in range(3):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(10)
    # Each new thread closed the connections of those that had ended before it...
    assert [c.connection is None for c in used] == [True, True, False]
    # ...and closing the store closes the last one's.
    store.close()
    assert used[-1].connection is None
    assert store.get("t2") is not None


@pytest.mark.postgres
def test_a_connection_the_server_dropped_is_replaced(django_project: dict[str, Any]) -> None:
    # A long-lived thread (the reporter's) has no request after which Django would
    # replace a broken connection: the store does, and the operation goes through.
    needs_postgres(django_project)
    clear(PG)
    store = DjangoStore(PG)
    store.add(_record("t1"))
    with connections[PG].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [pid] = cursor.fetchone()
    db = django_project[PG]
    dsn = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    assert store.get("t1") is not None


@pytest.mark.parametrize(("name", "params"), [("claim", [2.0, 1.0, 100]), ("purge", [1.0, 100])])
def test_sqlite_claim_and_purge_change_only_the_rows_they_picked(
    name: str, params: list[float], django_project: dict[str, Any]
) -> None:
    # As in the SQL store: the outer statement looks the picked rows up by rowid, read
    # from the outbox's (the expiry's) index; with the index's predicates repeated, SQLite
    # would walk every due row, and by the tracking id it would search the primary key's
    # own index first, a random page of it per row in a large table (bench flat).
    store = DjangoStore("default")
    with connections["default"].cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {store._sql[name]}", params)
        plan = [row[-1] for row in cursor.fetchall()]
    outer = next(step for step in plan if step.startswith(("SEARCH", "SCAN")))
    assert "USING INTEGER PRIMARY KEY (rowid=?)" in outer, plan


@pytest.mark.parametrize("backend", BACKENDS)
def test_purge_deletes_in_short_statements(backend: str, django_project: dict[str, Any]) -> None:
    # One DELETE per batch, each its own transaction: a long purge never holds SQLite's
    # one write lock for its whole length (bench flat: "confirm while purging").
    alias = _alias(backend, django_project)
    clear(alias)
    store = DjangoStore(alias)
    store.purge_batch = 10
    for n in range(25):
        store.add(Record(f"old{n}", expires_at=1.0))
    store.add(_record("live"))
    deleted: list[int] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("DELETE"):
            deleted.append(context["cursor"].rowcount)
        return result

    with connections[alias].execute_wrapper(count):
        assert store.purge(now=2.0) == 25
    assert deleted == [10, 10, 5]
    assert store.get("live") is not None
    store.close()


def test_sqlite_purge_sizes_its_batches_by_their_time(django_project: dict[str, Any]) -> None:
    # As in the SQL store: on SQLite a batch is sized to hold the write lock about 2 ms
    # (50 records at least), so that a slow disk or a large table shortens the batches
    # instead of stalling the confirmations queued behind each one.
    clear("default")
    store = DjangoStore("default")
    with transaction.atomic(using="default"):
        for n in range(700):
            store.add(Record(f"old{n}", expires_at=1.0))
    deleted: list[int] = []

    def slow(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not sql.lstrip().upper().startswith("DELETE"):
            return execute(sql, params, many, context)
        time.sleep(0.02)  # a disk this slow: every batch takes 10 times too long
        result = execute(sql, params, many, context)
        deleted.append(context["cursor"].rowcount)
        return result

    with connections["default"].execute_wrapper(slow):
        assert store.purge(now=2.0) == 700
    assert deleted == [500, 50, 50, 50, 50, 0]
    store.close()


def test_sqlite_a_confirm_behind_a_purge_waits_for_its_turn_not_in_the_busy_handler(
    django_project: dict[str, Any],
) -> None:
    # A confirmation queued behind a purge's batch in this process waits for the batch's
    # write turn, and goes in the moment the batch commits: SQLite's own busy handler
    # would sleep on (1, 2, 5, ... 100 ms between tries), stalling it up to 100 ms past
    # the commit (bench flat: "confirm while purging"). The confirming connection's busy
    # timeout is 0 here: had it met SQLite's lock, it would fail "database is locked".
    clear("default")
    store = DjangoStore("default")
    store.add(_record("live"))
    store.add(Record("old", expires_at=1.0))
    holding, waiting = threading.Event(), threading.Event()
    outcome: list[object] = []

    def long_batch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not sql.lstrip().upper().startswith("DELETE"):
            return execute(sql, params, many, context)
        raw = context["connection"].connection
        raw.execute("BEGIN IMMEDIATE")
        holding.set()
        waiting.wait(5)
        time.sleep(0.24)  # a batch this long, while the confirmation waits
        result = execute(sql, params, many, context)
        raw.execute("COMMIT")
        return result

    def purge() -> None:
        with connections["default"].execute_wrapper(long_batch):
            store.purge(now=2.0)

    def confirm() -> None:
        with connections["default"].cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 0")
        waiting.set()
        try:
            won, _ = store.confirm("live", now=2.0, lease_until=62.0, keep_until=600.0)
            outcome.append(won)
        except Exception as exc:
            outcome.append(exc)

    purging, confirming = threading.Thread(target=purge), threading.Thread(target=confirm)
    purging.start()
    assert holding.wait(5)
    confirming.start()
    purging.join(30)
    confirming.join(30)
    assert outcome == [True]
    assert store.get("old") is None
    store.close()


@contextlib.contextmanager
def _autocommit_off(using: str) -> Iterator[None]:
    transaction.set_autocommit(False, using=using)
    try:
        yield
        transaction.commit(using=using)
    finally:
        transaction.set_autocommit(True, using=using)


@pytest.mark.parametrize("block", [transaction.atomic, _autocommit_off])
def test_sqlite_a_call_in_the_callers_transaction_does_not_wait_for_the_write_turn(
    block: Callable[..., ContextManager[Any]], django_project: dict[str, Any]
) -> None:
    # A store call inside the caller's transaction (atomic(), or autocommit off) joins
    # it, and that transaction may already hold SQLite's write lock while another writer
    # of this process waits for it, holding the process's write turn: the call must not
    # wait for the turn (each would wait on the other until a timeout).
    clear("default")
    store = DjangoStore("default")
    store.add(_record("live"))
    turn_taken = threading.Event()
    added: list[bool] = []

    def other_writer() -> None:
        with store._writing():
            turn_taken.set()
            store.add(_record("other"))  # waits for the transaction below to commit
        added.append(True)

    thread = threading.Thread(target=other_writer)
    with block(using="default"):
        store.add(_record("mine"))  # SQLite's write lock, until the block ends
        thread.start()
        assert turn_taken.wait(5)
        started = time.monotonic()
        won, _ = store.confirm("live", now=2.0, lease_until=62.0, keep_until=600.0)
        took = time.monotonic() - started
    thread.join(10)
    assert won
    assert took < 1.0, f"{took:.1f} s"
    assert added == [True]
    assert store.get("mine") is not None
    store.close()
