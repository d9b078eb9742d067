"""The app's migrations: they match the model, and 0002 (the partial outbox index)
upgrades a table of 0001 in place, its records kept."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections

from twilio_feedback.django.store import TABLE, DjangoStore
from twilio_feedback.records import Record

from .conftest import PG, clear, needs_postgres

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def test_the_migrations_match_the_model(django_project: dict[str, Any]) -> None:
    out = io.StringIO()
    call_command("makemigrations", "twilio_feedback", check=True, dry_run=True, stdout=out)
    assert "No changes detected" in out.getvalue()


def _indexes(alias: str) -> dict[str, Any]:
    connection = connections[alias]
    with connection.cursor() as cursor:
        return dict(connection.introspection.get_constraints(cursor, TABLE))


@pytest.mark.parametrize("backend", BACKENDS)
def test_0002_makes_the_outbox_index_partial_in_place(
    backend: str, django_project: dict[str, Any]
) -> None:
    alias = "default"
    if backend == "postgres":
        needs_postgres(django_project)
        alias = PG
    clear(alias)
    call_command("migrate", "twilio_feedback", "0001", database=alias, verbosity=0)
    try:
        assert "twilio_feedback_outbox" in _indexes(alias)
        store = DjangoStore(alias)
        store.add(Record("waiting", expires_at=4e9, message_sid="SM" + "a" * 32))
        assert store.confirm("waiting", now=1.0, lease_until=0.5, keep_until=1.0)[0]
    finally:
        call_command("migrate", "twilio_feedback", database=alias, verbosity=0)
    indexes = _indexes(alias)
    assert "twilio_feedback_outbox" not in indexes
    assert indexes["twilio_feedback_due"]["columns"] == ["lease_until"]
    [claimed] = store.claim(now=1.0, lease_until=60.0, limit=10)
    assert claimed.tracking_id == "waiting"
    store.close()
