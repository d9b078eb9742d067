"""Store failures cross one typed boundary, and nothing is lost or posted twice when the
store fails around a report or a send."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from twilio_feedback import FeedbackTracker, Record, Settings, State
from twilio_feedback.errors import StorageError
from twilio_feedback.stores.boundary import StoreBoundary
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.tracker import key_tracking_id

PHONE, SENDER = "+15558675310", "+15017122661"


class FlakyStore(MemoryStore):
    """A memory store whose listed operations fail while ``down`` (an outage, injected)."""

    def __init__(self, *failing: str, error: type[Exception] = ConnectionError) -> None:
        super().__init__()
        self.failing = set(failing)
        self.error = error
        self.down = False

    def __getattribute__(self, name: str) -> Any:
        if name in object.__getattribute__(self, "failing") and object.__getattribute__(
            self, "down"
        ):
            error = object.__getattribute__(self, "error")

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise error(f"{name}: redis://:hunter2@127.0.0.1:1/0 refused the connection")

            return fail
        return super().__getattribute__(name)


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def flaky_tracker(settings: Settings) -> Iterator[Callable[..., FeedbackTracker]]:
    made: list[FeedbackTracker] = []

    def make(store: MemoryStore) -> FeedbackTracker:
        tracker = FeedbackTracker(settings.replace(store=store))
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=1)


def test_a_failure_becomes_a_storage_error_naming_backend_and_operation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore("confirm")
    store.down = True
    boundary = StoreBoundary(store)
    caplog.set_level(logging.DEBUG, logger="twilio_feedback.store")
    with pytest.raises(StorageError) as info:
        boundary.confirm("t", now=1.0, lease_until=2.0, keep_until=3.0)
    error = info.value
    assert (error.backend, error.operation) == ("FlakyStore", "confirm")
    assert isinstance(error.__cause__, ConnectionError)
    assert "ConnectionError" in str(error)
    assert "hunter2" not in str(error) + caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("Traceback" in line and "ConnectionError" in line for line in debug)


def test_failures_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore("confirm")
    store.down = True
    boundary = StoreBoundary(store)
    for _ in range(50):
        with pytest.raises(StorageError):
            boundary.confirm("t", now=1.0, lease_until=2.0, keep_until=3.0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the next one, 10 s later, would count the 49 others


def test_a_bug_in_a_custom_store_is_told_apart_from_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore("confirm", error=AttributeError)
    store.down = True
    with pytest.raises(StorageError, match="AttributeError"):
        StoreBoundary(store).confirm("t", now=1.0, lease_until=2.0, keep_until=3.0)
    assert "FlakyStore.confirm() failed: AttributeError" in caplog.text


def test_other_attributes_are_the_wrapped_stores() -> None:
    store = MemoryStore()
    boundary = StoreBoundary(store)
    assert boundary.inner is store
    assert boundary.list_records(State.PENDING, limit=1) == []  # the operator's methods


def test_an_outcome_the_store_cannot_take_is_written_later_not_posted_again(
    flaky_tracker: Callable[..., FeedbackTracker], fake_twilio: FakeTwilio
) -> None:
    store = FlakyStore("mark_reported", "renew", "claim", "defer")
    tracker = flaky_tracker(store)
    sid = str(tracker.send(to=PHONE, from_=SENDER, body="code", key="k").sid)
    fake_twilio.latency = 0.5
    assert tracker.confirm(key="k").confirmed
    store.down = True  # the store fails while the post is under way
    fake_twilio.wait_for_feedback(1, timeout=10)
    wait_until(lambda: tracker.stats()["reported"] == 1, 5)
    assert tracker.flush(0) == 1  # still held: its outcome is not written yet
    store.down = False
    # The heartbeat (every lease_seconds / 3 at default settings) writes it.
    wait_until(lambda: store.get(key_tracking_id("k")).state is State.REPORTED, 15)  # type: ignore[union-attr]
    assert tracker.flush(5) == 0
    assert [p.message_sid for p in fake_twilio.feedback] == [sid]


def test_a_retry_is_kept_in_memory_when_the_store_cannot_defer_it(
    flaky_tracker: Callable[..., FeedbackTracker], fake_twilio: FakeTwilio
) -> None:
    store = FlakyStore("defer", "renew", "claim")
    tracker = flaky_tracker(store)
    sid = str(tracker.send(to=PHONE, from_=SENDER, body="code", key="k").sid)
    store.down = True  # Twilio and the store fail together
    fake_twilio.fail_next(503)
    assert tracker.confirm(key="k").confirmed
    fake_twilio.wait_for_feedback(1, timeout=10)  # the retry, from memory, soon after
    store.down = False
    assert tracker.flush(10) == 0
    assert [p.message_sid for p in fake_twilio.feedback] == [sid]
    record = store.get(key_tracking_id("k"))
    assert record is not None
    assert record.state is State.REPORTED


def test_send_never_raises_once_the_text_is_out(
    flaky_tracker: Callable[..., FeedbackTracker], fake_twilio: FakeTwilio
) -> None:
    store = FlakyStore("attach_sid")
    tracker = flaky_tracker(store)
    store.down = True
    message = tracker.send(to=PHONE, from_=SENDER, body="code", key="k")  # no raise
    assert len(fake_twilio.messages) == 1
    record: Record | None = store.get(key_tracking_id("k"))
    assert record is not None
    assert record.message_sid is None
    assert tracker.confirm(key="k").confirmed  # the click counts meanwhile
    store.down = False
    fake_twilio.wait_for_feedback(1, timeout=15)  # SID attached in the background
    assert fake_twilio.feedback[0].message_sid == message.sid


async def test_send_async_never_raises_once_the_text_is_out(
    flaky_tracker: Callable[..., FeedbackTracker], fake_twilio: FakeTwilio
) -> None:
    store = FlakyStore("attach_sid")
    tracker = flaky_tracker(store)
    store.down = True
    message = await tracker.send_async(to=PHONE, from_=SENDER, body="code", key="k")
    store.down = False
    wait_until(lambda: store.get(key_tracking_id("k")).message_sid is not None, 15)  # type: ignore[union-attr]
    assert store.get(key_tracking_id("k")).message_sid == message.sid  # type: ignore[union-attr]


def test_a_store_failure_before_the_send_raises_and_sends_nothing(
    flaky_tracker: Callable[..., FeedbackTracker], fake_twilio: FakeTwilio
) -> None:
    store = FlakyStore("add")
    tracker = flaky_tracker(store)
    store.down = True
    with pytest.raises(StorageError):
        tracker.send(to=PHONE, from_=SENDER, body="code", key="k")
    assert fake_twilio.messages == []


def test_a_store_without_a_required_method_is_refused_when_the_tracker_starts(
    settings: Settings,
) -> None:
    from twilio_feedback.errors import ConfigurationError

    class NoRenew(MemoryStore):
        renew = None  # type: ignore[assignment]

    with pytest.raises(ConfigurationError, match="renew is not callable"):
        FeedbackTracker(settings.replace(store=NoRenew()))
