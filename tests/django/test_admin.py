"""The read-only admin of the ``django://`` store's records. (Models are imported in the
tests: Django is set up by a fixture, after collection.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from twilio_feedback.django.store import DjangoStore
from twilio_feedback.records import Record, State

from .conftest import clear

URL = "/admin/twilio_feedback/feedbackrecord/"


@pytest.fixture
def admin_client(on_emulator: Any) -> Iterator[Client]:
    from django.contrib.auth.models import User

    clear()
    User.objects.filter(username="admin").delete()
    User.objects.create_superuser("admin", "admin@example.com", "password")
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    yield client
    User.objects.filter(username="admin").delete()


def test_records_are_listed_with_their_states(admin_client: Client) -> None:
    store = DjangoStore()
    now = time.time()
    store.add(Record("pending-one", expires_at=now + 3600, created_at=now))
    store.add(Record("failed-one", expires_at=now + 3600, state=State.FAILED, error_code=21610))
    listing = admin_client.get(URL)
    assert listing.status_code == 200
    assert b"pending-one" in listing.content
    assert b"failed-one" in listing.content
    failed = admin_client.get(URL, {"state__exact": "failed"})
    assert b"failed-one" in failed.content
    assert b"pending-one" not in failed.content
    detail = admin_client.get(f"{URL}pending-one/change/")
    assert detail.status_code == 200
    assert b"pending-one" in detail.content


def test_nothing_can_be_added_changed_or_deleted(admin_client: Client) -> None:
    DjangoStore().add(Record("r1", expires_at=time.time() + 3600))
    assert admin_client.get(f"{URL}add/").status_code == 403
    changed = admin_client.post(f"{URL}r1/change/", {"state": "reported"})
    assert changed.status_code == 403
    assert admin_client.post(f"{URL}r1/delete/", {"post": "yes"}).status_code == 403
    from twilio_feedback.django.models import FeedbackRecord

    assert FeedbackRecord.objects.get(pk="r1").state == "pending"


DAILY = "/admin/twilio_feedback/feedbackdaily/"
US, FR = 'class="field-country">US<', 'class="field-country">FR<'


SENT = time.time()


def _counted(store: DjangoStore, tracking_id: str, country: str, *, after: float | None) -> None:
    """A message to ``country`` sent at ``SENT`` (one day for every message), confirmed
    ``after`` seconds later (or not)."""
    sent = SENT
    store.add(
        Record(
            tracking_id,
            expires_at=sent + 3600,
            created_at=sent,
            message_sid="SM" + tracking_id.rjust(32, "0"),
            country=country,
            sender="+15017122661",
        )
    )
    if after is not None:
        won, _ = store.confirm(
            tracking_id, now=sent + after, lease_until=sent + after, keep_until=sent + 3600
        )
        assert won


def test_the_insights_are_listed_per_day_country_and_sender(admin_client: Client) -> None:
    store = DjangoStore()
    _counted(store, "1", "US", after=5)
    _counted(store, "2", "US", after=100)
    _counted(store, "3", "US", after=None)
    _counted(store, "4", "US", after=None)
    _counted(store, "5", "FR", after=None)
    listing = admin_client.get(DAILY)
    assert listing.status_code == 200
    text = listing.content.decode()
    assert US in text
    assert FR in text
    assert "+15017122661" in text
    assert "50.0%" in text  # US: 2 of 4 confirmed
    assert "0.0%" in text  # FR: none of 1
    assert "≤ 2 min" in text  # US: p90 within the 120 s bucket
    only_fr = admin_client.get(DAILY, {"country": "FR"}).content.decode()
    assert FR in only_fr
    assert US not in only_fr
    from twilio_feedback.django.models import FeedbackDaily

    us = FeedbackDaily.objects.get(country="US")
    detail = admin_client.get(f"{DAILY}{us.pk}/change/")
    assert detail.status_code == 200
    # The time-to-confirm histogram, bucket by bucket.
    assert "≤ 10 s: 1" in detail.content.decode()
    assert "≤ 2 min: 1" in detail.content.decode()


def test_the_insights_cannot_be_added_changed_or_deleted(admin_client: Client) -> None:
    store = DjangoStore()
    _counted(store, "1", "US", after=5)
    from twilio_feedback.django.models import FeedbackDaily

    cell = FeedbackDaily.objects.get()
    assert admin_client.get(f"{DAILY}add/").status_code == 403
    assert admin_client.post(f"{DAILY}{cell.pk}/change/", {"sent": 99}).status_code == 403
    assert admin_client.post(f"{DAILY}{cell.pk}/delete/", {"post": "yes"}).status_code == 403
    assert (FeedbackDaily.objects.get().sent, FeedbackDaily.objects.get().confirmed) == (1, 1)
