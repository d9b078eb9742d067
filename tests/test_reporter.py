"""Background delivery over real HTTP to FakeTwilio: retries, failures, flush, the sweep."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest

from twilio_feedback import FeedbackError, FeedbackTracker, Record, Settings, State
from twilio_feedback.reporter import backoff
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio, Hang, Status
from twilio_feedback.tracker import key_tracking_id

PHONE, SENDER = "+15558675310", "+15017122661"


@pytest.fixture
def make_tracker(settings: Settings) -> Iterator[object]:
    made: list[FeedbackTracker] = []

    def make(**overrides: object) -> FeedbackTracker:
        tracker = FeedbackTracker(settings.replace(**overrides))
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=0.5)


def _sent(tracker: FeedbackTracker, key: str) -> str:
    return str(tracker.send(to=PHONE, from_=SENDER, body="code", key=key).sid)


def test_confirm_does_not_wait_for_a_slow_twilio(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    sid = _sent(tracker, "slow")
    fake_twilio.latency = 2.0
    started = time.perf_counter()
    result = tracker.confirm(key="slow")
    elapsed = time.perf_counter() - started
    assert result.confirmed
    assert elapsed < 0.05
    assert fake_twilio.feedback == []
    assert fake_twilio.wait_for_feedback(1, timeout=10)[0].message_sid == sid


def test_503_twice_then_200_is_reported_once(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    _sent(tracker, "k")
    fake_twilio.fail_next(503, 503)
    assert tracker.confirm(key="k").confirmed
    assert tracker.flush(timeout=15) == 0
    assert len(fake_twilio.feedback) == 1
    feedback_requests = [r for r in fake_twilio.requests if r.path.endswith("Feedback.json")]
    assert [r.status for r in feedback_requests] == [503, 503, 200]
    record = tracker.store.get(key_tracking_id("k"))
    assert record is not None
    assert record.state is State.REPORTED
    assert tracker.stats()["retried"] == 2
    assert tracker.stats()["reported"] == 1


def test_429_retry_after_is_honoured(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    _sent(tracker, "k")
    fake_twilio.fail_next(Status(429, retry_after=1))
    tracker.confirm(key="k")
    fake_twilio.wait_for_feedback(1, timeout=10)
    first, second = (r for r in fake_twilio.requests if r.path.endswith("Feedback.json"))
    assert first.status == 429
    assert second.time - first.time >= 1.0


def test_404_fails_after_one_attempt_with_the_code(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    failures: list[tuple[Record, FeedbackError]] = []
    with FeedbackTracker(settings, on_failed=lambda r, e: failures.append((r, e))) as tracker:
        tracker.bind(key="ghost", message_sid="SM" + "0" * 32)
        assert tracker.confirm(key="ghost").confirmed
        assert tracker.flush(timeout=5) == 0
        record = tracker.store.get(key_tracking_id("ghost"))
        assert record is not None
        assert (record.state, record.error_code) == (State.FAILED, 20404)
        assert tracker.stats()["failed"] == 1
    assert len([r for r in fake_twilio.requests if r.path.endswith("Feedback.json")]) == 1
    assert failures[0][1].code == 20404


def test_transient_failures_end_as_failed_after_the_retry_window(
    make_tracker: object, fake_twilio: FakeTwilio
) -> None:
    tracker = make_tracker(retry_window=0.5)  # type: ignore[operator]
    _sent(tracker, "k")
    fake_twilio.fail_always(503)
    tracker.confirm(key="k")
    assert tracker.flush(timeout=10) == 0
    record = tracker.store.get(key_tracking_id("k"))
    assert record is not None
    assert record.state is State.FAILED
    assert record.error_code == 20503
    assert record.attempts >= 1


@pytest.mark.timeout(30)
def test_flush_returns_on_time_while_twilio_hangs(
    make_tracker: object, fake_twilio: FakeTwilio
) -> None:
    tracker = make_tracker(request_timeout=20)  # type: ignore[operator]
    _sent(tracker, "k")
    fake_twilio.fail_next(Hang())
    tracker.confirm(key="k")
    started = time.monotonic()
    pending = tracker.flush(timeout=0.5)
    elapsed = time.monotonic() - started
    assert pending == 1
    assert 0.45 <= elapsed < 1.0
    fake_twilio.release()


def test_hooks_that_raise_do_not_kill_workers(
    settings: Settings, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(record: Record) -> None:
        raise RuntimeError("hook bug")

    with FeedbackTracker(settings.replace(reporter_concurrency=1), on_reported=explode) as tracker:
        for n in range(3):
            _sent(tracker, f"k{n}")
            tracker.confirm(key=f"k{n}")
        assert tracker.flush(timeout=5) == 0
    assert len(fake_twilio.feedback) == 3
    assert "hook" in caplog.text


def test_full_queue_drops_are_counted_and_swept_later(
    make_tracker: object, fake_twilio: FakeTwilio
) -> None:
    tracker = make_tracker(  # type: ignore[operator]
        reporter_concurrency=1, queue_size=1, lease_seconds=0.3, sweep_interval=0.1
    )
    for n in range(3):
        _sent(tracker, f"k{n}")
    fake_twilio.fail_next(Hang())
    tracker.confirm(key="k0")  # taken by the only worker, which hangs
    assert fake_twilio.wait_for(lambda: fake_twilio.in_flight == 1, 5)
    tracker.confirm(key="k1")  # fills the queue
    tracker.confirm(key="k2")  # dropped: stays confirmed in the store
    assert tracker.stats()["dropped"] >= 1
    fake_twilio.release()
    assert len(fake_twilio.wait_for_feedback(3, timeout=10)) >= 3
    assert {p.message_sid for p in fake_twilio.feedback} == {m.sid for m in fake_twilio.messages}


def test_sweep_redrives_confirmations_left_by_a_dead_reporter(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    store = MemoryStore()
    shared = settings.replace(store=store, lease_seconds=0.2, sweep_interval=0.1)
    first = FeedbackTracker(shared)
    fake_twilio.fail_always(503)
    for n in range(5):
        _sent(first, f"k{n}")
        assert first.confirm(key=f"k{n}").confirmed
    # The first process goes away with its reports undone (as a crash would leave them).
    first.reporter.close(timeout=0)
    fake_twilio.clear_faults()
    assert store.counts()["confirmed"] == 5
    with FeedbackTracker(shared) as second:
        posts = fake_twilio.wait_for_feedback(5, timeout=10)
        assert {p.message_sid for p in posts} == {m.sid for m in fake_twilio.messages}
        assert second.flush(5) == 0
        assert second.stats()["swept"] >= 5
    assert store.counts()["reported"] == 5


def test_concurrent_submissions_are_each_reported_once(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    for n in range(20):
        _sent(tracker, f"k{n}")
    threads = [
        threading.Thread(target=tracker.confirm, kwargs={"key": f"k{n % 20}"}) for n in range(60)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert tracker.flush(10) == 0
    assert len(fake_twilio.feedback) == 20
    assert tracker.stats()["confirmed"] == 20
    assert tracker.stats()["duplicate"] == 40


def test_backoff_is_bounded_full_jitter() -> None:
    for attempt in range(1, 60):
        assert 0 <= backoff(attempt) <= 60.0
    assert max(backoff(1) for _ in range(200)) <= 1.0


def test_close_is_idempotent(tracker: FeedbackTracker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert tracker.close() == 0
    assert tracker.close() == 0
