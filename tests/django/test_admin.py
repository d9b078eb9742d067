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
