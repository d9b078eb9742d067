"""The ``reporter`` setting: ``thread`` (background threads), ``off`` (web processes only
write the store and start no threads at all; delivery is a worker's or a drain's) and the
delivery seam the confirm step hands a winning record to."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from twilio_feedback import ConfigurationError, FeedbackTracker, Settings, State
from twilio_feedback.delivery import OutboxDelivery, ThreadDelivery
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.stores.sql import SQLStore
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.testing.fake_twilio import Drop
from twilio_feedback.tracker import key_tracking_id

PHONE, SENDER = "+15558675310", "+15017122661"

pytest.importorskip("sqlalchemy")


def library_threads() -> set[threading.Thread]:
    # The SQL store's own threads run only the calls a request awaits (as asyncio's
    # executor would), idle in between: not background work.
    return {
        t
        for t in threading.enumerate()
        if t.name.startswith("twilio-feedback") and t.name != "twilio-feedback-sql"
    }


class Switch:
    """A store whose listed operations fail while ``down``; everything else is the inner
    store's (not a MemoryStore: the off mode refuses those)."""

    def __init__(self, inner: Any, *failing: str) -> None:
        self.inner = inner
        self.failing = set(failing)
        self.down = False
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        if self.down and name in self.failing:

            def fail(*args: Any, **kwargs: Any) -> Any:
                self.failures += 1
                raise ConnectionError(f"{name}: refused")

            return fail
        return getattr(self.inner, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'feedback.db'}"


@pytest.fixture
def off(settings: Settings, sqlite_url: str) -> Iterator[FeedbackTracker]:
    before = library_threads()
    tracker = FeedbackTracker(settings.replace(store=sqlite_url, reporter="off"))
    yield tracker
    tracker.close(timeout=2)
    assert library_threads() - before == set()


def test_thread_mode_is_the_default_and_hands_records_to_the_reporter(
    tracker: FeedbackTracker,
) -> None:
    assert tracker.settings.reporter == "thread"
    assert isinstance(tracker.delivery, ThreadDelivery)
    assert tracker.delivery.reporter is tracker.reporter


def test_off_starts_no_threads_and_posts_nothing(
    off: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    before = library_threads()
    assert isinstance(off.delivery, OutboxDelivery)
    message = off.send(to=PHONE, from_=SENDER, body="Code 1", key="login:1")
    started = time.time()
    assert off.confirm(key="login:1").confirmed
    assert off.confirm(key="login:1").status == "duplicate"
    assert off.flush(timeout=0) == 0
    assert library_threads() - before == set()
    assert fake_twilio.feedback == []
    record = off.store.get(key_tracking_id("login:1"))
    assert record is not None
    assert (record.state, record.message_sid) == (State.CONFIRMED, message.sid)
    # Nobody here holds it: the lease has ended, so a worker's next sweep takes it at once.
    assert record.lease_until <= started + 1
    [claimed] = off.store.claim(now=time.time(), lease_until=time.time() + 15, limit=10)
    assert claimed.tracking_id == record.tracking_id


async def test_off_async_confirm_starts_no_threads_either(
    off: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    await off.send_async(to=PHONE, from_=SENDER, body="Code 2", key="login:2")
    before = library_threads()
    assert (await off.confirm_async(key="login:2")).confirmed
    assert library_threads() - before == set()
    assert fake_twilio.feedback == []


@pytest.mark.parametrize("mode", ["off", "celery"])
def test_memory_store_is_refused_without_an_in_process_reporter(
    settings: Settings, mode: str
) -> None:
    for store in ("memory://", MemoryStore()):
        with pytest.raises(ConfigurationError, match="nothing could ever deliver") as info:
            FeedbackTracker(settings.replace(store=store, reporter=mode))
        message = str(info.value)
        assert "sqlite://" in message
        assert "reporter='thread'" in message


def test_off_a_store_outage_answers_error_and_keeps_nothing(
    settings: Settings, sqlite_url: str, fake_twilio: FakeTwilio
) -> None:
    # Deferral needs a thread to replay kept confirmations: with reporter="off" there is
    # none, so a confirmation the store cannot take is refused (the link works again once
    # the store is back), as with deferred_size=0.
    store = Switch(SQLStore(sqlite_url), "confirm")
    before = library_threads()
    tracker = FeedbackTracker(settings.replace(store=store, reporter="off"))
    try:
        tracker.send(to=PHONE, from_=SENDER, body="Code", key="k")
        store.down = True
        result = tracker.confirm(key="k")
        assert result.status == "error"
        assert tracker.stats()["deferred_pending"] == 0
        assert library_threads() - before == set()
        store.down = False
        assert tracker.confirm(key="k").confirmed
    finally:
        tracker.close(timeout=1)


def test_off_an_ambiguous_send_keeps_the_record_but_looks_nothing_up(
    off: FeedbackTracker, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    before = library_threads()
    fake_twilio.fail_next(Drop(after=True), endpoint="messages")
    with pytest.raises(requests.ConnectionError):
        off.send(to=PHONE, from_=SENDER, body="Code", key="lost")
    assert len(fake_twilio.messages) == 1  # Twilio created it; its SID never came back
    assert library_threads() - before == set()
    stats = off.stats()
    assert (stats["lookup_pending"], stats["lookup_dropped"]) == (0, 1)
    assert "no background lookups" in caplog.text
    # The click still counts; its report cannot be made (the SID is unknown).
    assert off.confirm(key="lost").confirmed


def test_drain_delivers_in_off_mode_then_stops_its_threads(
    off: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    sids = [str(off.send(to=PHONE, from_=SENDER, body="c", key=f"k{n}").sid) for n in range(5)]
    for n in range(5):
        assert off.confirm(key=f"k{n}").confirmed
    before = library_threads()
    drained = off.drain(timeout=10)
    assert (drained.taken, drained.reported, drained.failed, drained.left) == (5, 5, 0, 0)
    assert sorted(p.message_sid for p in fake_twilio.feedback) == sorted(sids)
    assert library_threads() - before == set()
    # Again (a warm serverless container runs the scheduled drain in the same process).
    off.send(to=PHONE, from_=SENDER, body="c", key="again")
    off.confirm(key="again")
    assert off.drain(timeout=10).reported == 1
    assert off.store.counts()["reported"] == 6


def test_drain_in_thread_mode_uses_the_running_reporter(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    tracker.bind(key="x", message_sid=fake_twilio.add_messages(1)[0])
    assert tracker.confirm(key="x").confirmed
    drained = tracker.drain(timeout=10)
    assert drained.left == 0
    assert tracker.stats()["reported"] == 1
