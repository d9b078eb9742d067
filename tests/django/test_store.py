"""The ``django://`` store: the conformance suite on SQLite and PostgreSQL through Django's
own connections, the URL, the databases it refuses, and its connections' lifecycle."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connections
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


def test_sqlite_claim_updates_only_the_rows_it_picked(django_project: dict[str, Any]) -> None:
    # As in the SQL store: the outer UPDATE looks the picked ids up by primary key, not
    # through the outbox index (which would visit every due row).
    store = DjangoStore("default")
    with connections["default"].cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {store._sql['claim']}", [2.0, 1.0, 100])
        plan = [row[-1] for row in cursor.fetchall()]
    outer = next(step for step in plan if step.startswith(("SEARCH", "SCAN")))
    assert "tracking_id=?" in outer or "PRIMARY KEY" in outer, plan


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
