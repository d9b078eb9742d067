"""Acceptance: a known traffic pattern gives exactly the known insights, on every store that
keeps them, through ``tracker.insights()``; purging and expiring records changes nothing.

A store joins by implementing :class:`~twilio_feedback.stores.InsightsStore`; until then its
case is skipped, saying so. The ``django://`` store runs the same acceptance in
tests/django/test_insights.py (Django is set up there).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.insights import InsightRow
from twilio_feedback.stores import InsightsStore, Store
from twilio_feedback.testing import FakeTwilio

from .conftest import SECRET_KEY
from .insights_traffic import (
    BY_COUNTRY,
    BY_DAY_COUNTRY,
    BY_SENDER,
    TOTAL,
    Figures,
    play_past,
    play_today,
    today,
)
from .stores.test_conformance import make_store

STORES = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]
SHORT_TTL = 1.0


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    cleanup: list[Any] = []
    store = make_store(request.param, request, cleanup)
    if not isinstance(store, InsightsStore):
        store.close()
        pytest.skip(f"{type(store).__name__} keeps no insights yet (InsightsStore)")
    yield store
    store.close()
    for close in cleanup:
        close()


def figures(row: InsightRow) -> Figures:
    assert row.sent
    assert row.conversion == pytest.approx(row.confirmed / row.sent)
    return Figures(row.sent, row.confirmed, row.reported, row.failed, row.ttc_p50, row.ttc_p90)


def wait_gone(store: Store, tracking_ids: list[str], timeout: float) -> None:
    """Purge until none of ``tracking_ids`` is left (a store that expires records by
    itself does it on its own clock)."""
    deadline = time.monotonic() + timeout
    while True:
        store.purge(now=time.time() + 1)
        left = [tracking_id for tracking_id in tracking_ids if store.get(tracking_id)]
        if not left:
            return
        assert time.monotonic() < deadline, f"{len(left)} records did not expire"
        time.sleep(0.05)


def test_known_traffic_gives_known_insights(store: Store, fake_twilio: FakeTwilio) -> None:
    known_traffic_gives_known_insights(store, fake_twilio)


def known_traffic_gives_known_insights(store: Store, fake_twilio: FakeTwilio) -> None:
    """The acceptance on ``store`` (empty, keeping insights); the Django store's test in
    tests/django runs it on the project's databases."""
    settings = Settings(
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        secret_key=SECRET_KEY,
        store=store,
        api_base_url=fake_twilio.base_url,
    )
    day = today()
    since, until = day - timedelta(days=3), day
    with FeedbackTracker(settings) as tracker:
        expiring = play_past(store, short_ttl=SHORT_TTL)
        before = tracker.insights(since=since, until=until, by=("day", "country", "sender"))
        wait_gone(store, expiring, 10 * SHORT_TTL + 10)
        assert tracker.insights(since=since, until=until, by=("day", "country", "sender")) == (
            before
        ), "expiry and purge changed a past figure"

        play_today(tracker, fake_twilio)

        by_day = tracker.insights(since=timedelta(days=3))
        assert (by_day.since, by_day.until) == (since, until)
        assert {
            ((day - row.day).days, row.country): figures(row)  # type: ignore[operator]
            for row in by_day.rows
        } == BY_DAY_COUNTRY
        assert [(row.day, row.country) for row in by_day.rows] == sorted(
            (row.day, row.country)  # type: ignore[misc]
            for row in by_day.rows
        )
        by_country = tracker.insights(since=since, until=until, by=("country",))
        assert {row.country: figures(row) for row in by_country.rows} == BY_COUNTRY
        assert all(row.day is None and row.sender is None for row in by_country.rows)
        by_sender = tracker.insights(since=since, until=until, by=("sender",))
        assert {row.sender: figures(row) for row in by_sender.rows} == BY_SENDER
        [total] = tracker.insights(since=since, until=until, by=()).rows
        assert figures(total) == TOTAL
        assert total.conversion == pytest.approx(21 / 38)
        recent = tracker.insights(since=timedelta(days=1), by=("country",))
        assert {row.country: row.sent for row in recent.rows} == {"FR": 3, "US": 2, "XX": 3}
        assert tracker.insights(since=day - timedelta(days=30), until=since).rows == [
            row for row in by_day.rows if row.day == since
        ]

        everything = tracker.insights(since=since, until=until, by=("day", "country", "sender"))
        assert tracker.flush(10) == 0
        store.purge(now=time.time() + 30 * 86400.0)  # every record, on every store but Redis
        assert tracker.insights(since=since, until=until, by=("day", "country", "sender")) == (
            everything
        ), "purging every record changed a past figure"
