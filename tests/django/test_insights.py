"""The conversion insights' acceptance on the ``django://`` store: the known traffic of
tests/insights_traffic.py gives the known figures through ``tracker.insights()`` and the
``report`` command (table, --json, --csv), unchanged by expiry and purge, on the project's
SQLite and PostgreSQL databases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from twilio_feedback.django.store import DjangoStore
from twilio_feedback.testing import FakeTwilio

from ..test_cli_report import known_traffic_through_the_command
from ..test_insights_acceptance import known_traffic_gives_known_insights
from .conftest import PG, clear, needs_postgres

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, django_project: dict[str, Any]) -> Iterator[DjangoStore]:
    alias = "default"
    if request.param == "postgres":
        needs_postgres(django_project)
        alias = PG
    clear(alias)
    store = DjangoStore(alias)
    yield store
    store.close()


def test_known_traffic_gives_known_insights(store: DjangoStore, fake_twilio: FakeTwilio) -> None:
    known_traffic_gives_known_insights(store, fake_twilio)


def test_known_traffic_through_the_command(
    store: DjangoStore, fake_twilio: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    known_traffic_through_the_command(store, fake_twilio, capsys)
