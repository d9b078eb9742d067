"""An app's own test, written the Django way: a ``TestCase`` (each test in a transaction
that is rolled back) and its ``Client``, with the store in the test's database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import TestCase

from twilio_feedback.testing import FakeTwilio

from .conftest import BROWSER, PG, needs_postgres


@pytest.fixture(scope="class")
def emulator(request: pytest.FixtureRequest, django_project: dict[str, Any]) -> Iterator[None]:
    # On PostgreSQL, the reporter's own connection does not wait on the test's open
    # transaction (SQLite's single writer would keep it waiting until the rollback).
    needs_postgres(django_project)
    with FakeTwilio() as fake:
        request.cls.fake = fake
        yield


@pytest.mark.postgres
@pytest.mark.usefixtures("emulator")
class TestSignIn(TestCase):
    databases = {PG}
    fake: FakeTwilio

    def test_the_link_confirms_and_is_reported(self) -> None:
        from django.conf import settings

        with self.settings(
            TWILIO_ACCOUNT_SID=self.fake.account_sid,
            TWILIO_AUTH_TOKEN=self.fake.auth_token,
            TWILIO_PHONE_NUMBER="+15017122661",
            TWILIO_FEEDBACK={
                **settings.TWILIO_FEEDBACK,
                "STORE": f"django://{PG}",
                "API_BASE_URL": self.fake.base_url,
            },
        ):
            sent = self.client.post(
                "/send", {"to": "+15558675310"}, content_type="application/json"
            )
            link = self.fake.messages[-1].body.rsplit(" ", 1)[-1]
            # --8<-- [start:confirm]
            response = self.client.get(link, headers={"User-Agent": BROWSER})
            assert response.json()["status"] == "confirmed"
            # --8<-- [end:confirm]
            assert self.client.get(link, headers={"User-Agent": BROWSER}).json()["status"] == (
                "duplicate"
            )
            assert self.fake.wait_for(lambda: len(self.fake.feedback) == 1, timeout=10)
            assert self.fake.feedback[0].message_sid == sent.json()["message_sid"]
