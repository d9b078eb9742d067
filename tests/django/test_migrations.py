"""The app's migrations: they match the model, and 0002 (the partial outbox index) and
0003 (the insights' columns and table) upgrade older tables in place, records kept."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connections

from twilio_feedback.django.store import TABLE, DjangoStore
from twilio_feedback.insights import CELL_COLUMNS, CELL_KEY
from twilio_feedback.records import RECORD_FIELDS, Record

from .conftest import PG, clear, needs_postgres

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def test_the_migrations_match_the_model(django_project: dict[str, Any]) -> None:
    out = io.StringIO()
    call_command("makemigrations", "twilio_feedback", check=True, dry_run=True, stdout=out)
    assert "No changes detected" in out.getvalue()


def test_the_models_hold_the_record_and_the_cell(django_project: dict[str, Any]) -> None:
    # The store's statements name the columns from where their rule lives; the models
    # (and so the migrations) must have exactly those.
    from twilio_feedback.django.models import FeedbackDaily, FeedbackRecord

    record = [f.column for f in FeedbackRecord._meta.concrete_fields]
    assert sorted(record) == sorted(RECORD_FIELDS)
    daily = [f.column for f in FeedbackDaily._meta.concrete_fields if not f.primary_key]
    assert sorted(daily) == sorted((*CELL_KEY, *CELL_COLUMNS))


def _indexes(alias: str) -> dict[str, Any]:
    connection = connections[alias]
    with connection.cursor() as cursor:
        return dict(connection.introspection.get_constraints(cursor, TABLE))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("start", ["0001", "0002"])
def test_older_tables_are_upgraded_in_place(
    backend: str, start: str, django_project: dict[str, Any]
) -> None:
    alias = "default"
    if backend == "postgres":
        needs_postgres(django_project)
        alias = PG
    clear(alias)
    call_command("migrate", "twilio_feedback", start, database=alias, verbosity=0)
    try:
        assert ("twilio_feedback_outbox" in _indexes(alias)) == (start == "0001")
        # A confirmed record, due, as the store of that release wrote it.
        with connections[alias].cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {TABLE} (tracking_id, state, message_sid, expires_at, "
                "created_at, confirmed_at, lease_until, attempts) "
                "VALUES ('waiting', 'confirmed', %s, 4e9, 0, 1, 0.5, 0)",
                ["SM" + "a" * 32],
            )
    finally:
        call_command("migrate", "twilio_feedback", database=alias, verbosity=0)
    store = DjangoStore(alias)
    indexes = _indexes(alias)
    assert "twilio_feedback_outbox" not in indexes
    assert indexes["twilio_feedback_due"]["columns"] == ["lease_until"]
    [claimed] = store.claim(now=1.0, lease_until=60.0, limit=10)
    assert claimed.tracking_id == "waiting"
    assert (claimed.country, claimed.sender) == (None, None)
    now = 1.7e9
    store.add(Record("new", expires_at=now + 600, created_at=now, country="FR", sender="Acme"))
    assert store.confirm("new", now=now + 5, lease_until=now + 60, keep_until=now)[0]
    today = datetime.fromtimestamp(now, timezone.utc).date()
    [cell] = store.insight_cells(today, today)
    assert (cell.country, cell.sender, cell.sent, cell.confirmed, cell.ttc[0]) == (
        "FR",
        "Acme",
        1,
        1,
        1,
    )
    store.close()
