"""``tracker.health()``: is delivery keeping up? The age of the oldest unreported
confirmation, the store's unreported and failed counts, this process's pending reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.health import Health
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.testing.fake_twilio import Status

from .servers import wait_until
from .test_boundary import FlakyStore


def test_ok_behind_and_ok_again(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    health = tracker.health()
    assert health == Health("ok", None, 0, 0, 0, 300.0)
    assert health.ok

    fake_twilio.fail_always(Status(503))  # Twilio is down: the confirmation waits
    [sid, refused] = fake_twilio.add_messages(2)
    tracker.bind(key="k", message_sid=sid)
    assert tracker.confirm(key="k").confirmed
    early = tracker.health(max_age=0.3)
    assert early.state == "ok"
    assert (early.unreported, early.pending) == (1, 1)
    wait_until(lambda: not tracker.health(max_age=0.3).ok, 10, "delivery falls behind")
    behind = tracker.health(max_age=0.3)
    assert behind.state == "behind"
    assert behind.oldest_unreported_age is not None
    assert behind.oldest_unreported_age > 0.3

    fake_twilio.clear_faults()  # back: the retry goes out, nothing waits any more
    fake_twilio.fail_next(Status(404))
    tracker.bind(key="refused", message_sid=refused)
    tracker.confirm(key="refused")
    wait_until(lambda: tracker.health(max_age=0.3).unreported == 0, 90, "the backlog drains")
    assert tracker.health(max_age=0.3) == Health("ok", None, 0, 1, 0, 0.3)
    assert tracker.health().to_dict() == {
        "ok": True,
        "state": "ok",
        "oldest_unreported_age": None,
        "unreported": 0,
        "failed": 1,
        "pending": 0,
        "max_age": 300.0,
    }


async def test_off_mode_has_no_pending_and_an_async_twin(
    settings: Settings, tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    pytest.importorskip("sqlalchemy")
    tracker = FeedbackTracker(
        settings.replace(store=f"sqlite:///{tmp_path / 'f.db'}", reporter="off")
    )
    try:
        tracker.bind(key="k", message_sid=fake_twilio.add_messages(1)[0])
        tracker.confirm(key="k")
        health = await tracker.health_async()
        assert (health.state, health.unreported, health.pending) == ("ok", 1, None)
        assert health.oldest_unreported_age is not None
    finally:
        tracker.close(timeout=1)


def test_a_store_that_fails_is_unavailable_not_an_exception(settings: Settings) -> None:
    store = FlakyStore("counts")
    tracker = FeedbackTracker(settings.replace(store=store))
    try:
        store.down = True
        health = tracker.health()
        assert (health.state, health.ok, health.unreported) == ("unavailable", False, None)
    finally:
        tracker.close(timeout=1)


def test_a_store_without_the_health_query_is_unknown(settings: Settings) -> None:
    class Plain:
        """A custom store with the Store methods only."""

        def __init__(self) -> None:
            self.inner = MemoryStore()

        def __getattr__(self, name: str) -> Any:
            if name == "oldest_unreported":
                raise AttributeError(name)
            return getattr(self.inner, name)

    tracker = FeedbackTracker(settings.replace(store=Plain()))  # type: ignore[arg-type]
    try:
        health = tracker.health()
        assert (health.state, health.ok, health.unreported) == ("unknown", False, 0)
    finally:
        tracker.close(timeout=1)
