"""pytest plugin: fixtures that start FakeTwilio for your tests.

Installed with the package (entry point ``pytest11``), so the fixtures are available in
any test suite that has twilio-feedback installed:

.. code-block:: python

    def test_signup_sends_tracked_sms(fake_twilio):
        settings = Settings(account_sid=fake_twilio.account_sid,
                            auth_token=fake_twilio.auth_token,
                            api_base_url=fake_twilio.base_url, secret_key=...)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake_twilio import FakeTwilio


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """A fresh FakeTwilio on 127.0.0.1, stopped after the test."""
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_twilio_session() -> Iterator[FakeTwilio]:
    """One FakeTwilio for the whole session; call ``reset()`` where a test needs a clean one."""
    with FakeTwilio() as fake:
        yield fake
