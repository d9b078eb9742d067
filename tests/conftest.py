from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio

from .servers import postgres_server, postgres_url, redis_server, redis_url

__all__ = ["postgres_server", "postgres_url", "redis_server", "redis_url"]

# No per-example deadline (hypothesis' default is 200 ms) nor a data-generation speed check:
# both measure the machine, and a loaded CI runner fails them now and then. Each property's
# example count bounds its run time; timing goals live in bench/.
hypothesis_settings.register_profile(
    "suite", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
hypothesis_settings.load_profile("suite")

SECRET_KEY = "test-secret-key-0123456789-abcdefghij"
CHROME = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36"
)


@pytest.fixture
def settings(fake_twilio: FakeTwilio) -> Settings:
    """Settings pointing at the emulator, with a fresh memory store."""
    return Settings(
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        secret_key=SECRET_KEY,
        store=MemoryStore(),
        api_base_url=fake_twilio.base_url,
        request_timeout=5.0,
    )


@pytest.fixture
def tracker(settings: Settings) -> Iterator[FeedbackTracker]:
    """A tracker on the emulator; closed after the test."""
    tracker = FeedbackTracker(settings)
    yield tracker
    tracker.close(timeout=2.0)
