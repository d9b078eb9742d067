"""``twilio_feedback.celery`` in one process: the report task's decisions (run eagerly, as
Celery's ``apply()`` does), the delivery that enqueues it, and the drain task. The real
worker, broker and uvicorn app are in tests/test_celery_e2e.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from twilio_feedback import ConfigurationError, FeedbackTracker, Record, Settings, State
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.testing.fake_twilio import Status
from twilio_feedback.tracker import key_tracking_id

celery = pytest.importorskip("celery")
pytest.importorskip("sqlalchemy")

import twilio_feedback.celery as tf_celery  # noqa: E402


@pytest.fixture
def app() -> Iterator[Any]:
    """An eager Celery app (tasks run where they are sent); the registration undone after."""
    saved = tf_celery._current
    app = celery.Celery("test", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = True
    yield app
    tf_celery._current = saved


@pytest.fixture
def shared(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(store=f"sqlite:///{tmp_path / 'f.db'}", reporter="celery")


def test_celery_mode_without_setup_says_what_to_do(shared: Settings) -> None:
    saved = tf_celery._current
    tf_celery._current = None
    try:
        with pytest.raises(ConfigurationError, match=r"twilio_feedback\.celery\.setup\(app\)"):
            FeedbackTracker(shared)
    finally:
        tf_celery._current = saved


def test_each_confirmation_enqueues_one_report(
    app: Any, shared: Settings, fake_twilio: FakeTwilio
) -> None:
    reported: list[Record] = []
    tf_celery.setup(app, shared, on_reported=reported.append)
    web = FeedbackTracker(shared)
    try:
        sids = [
            str(web.send(to="+15558675310", from_="+15017122661", body="c", key=f"k{n}").sid)
            for n in range(3)
        ]
        for n in range(3):
            assert web.confirm(key=f"k{n}").confirmed
        assert sorted(p.message_sid for p in fake_twilio.feedback) == sorted(sids)
        assert web.store.counts()["reported"] == 3
        assert sorted(str(r.message_sid) for r in reported) == sorted(sids)
        assert all(r.state is State.REPORTED for r in reported)
        assert web.stats()["reported"] == 0  # not this process's reporter: it runs none
    finally:
        web.close()


async def test_async_confirmations_enqueue_off_the_event_loop(
    app: Any, shared: Settings, fake_twilio: FakeTwilio
) -> None:
    tf_celery.setup(app, shared)
    web = FeedbackTracker(shared)
    try:
        [sid] = fake_twilio.add_messages(1)
        await web.bind_async(key="k", message_sid=sid)
        assert (await web.confirm_async(key="k")).confirmed
        assert [p.message_sid for p in fake_twilio.feedback] == [sid]
    finally:
        await web.aclose()


def confirmed(tracker: FeedbackTracker, fake: FakeTwilio, key: str) -> Record:
    [sid] = fake.add_messages(1)
    tracker.bind(key=key, message_sid=sid)
    now = time.time()
    won, record = tracker.store.confirm(
        key_tracking_id(key), now=now, lease_until=now + 15, keep_until=now + 3600
    )
    assert won
    assert record is not None
    return record


def run_report(tasks: tf_celery.FeedbackTasks, record: Record, **kwargs: Any) -> Any:
    return tasks.report.apply(args=(record.tracking_id, record.message_sid), kwargs=kwargs).get()


def test_the_report_task_decides_as_the_reporter_does(
    app: Any, shared: Settings, fake_twilio: FakeTwilio
) -> None:
    tasks = tf_celery.setup(app, shared.replace(reporter="off"))
    tracker = tasks.tracker()
    assert tracker.settings.reporter == "off"
    record = confirmed(tracker, fake_twilio, "ok")
    assert run_report(tasks, record, lease_until=record.lease_until) == "reported"
    assert run_report(tasks, record, lease_until=record.lease_until) == "done"  # not twice
    assert len(fake_twilio.feedback) == 1

    # Held by another process (a sweep took it while the task waited in the queue).
    held = confirmed(tracker, fake_twilio, "held")
    now = time.time()
    tracker.store.renew([(held.tracking_id, str(held.message_sid))], lease_until=now + 60)
    assert run_report(tasks, held, lease_until=held.lease_until) == "held elsewhere"

    # The key was bound to another message since: the old report does not touch it.
    moved = confirmed(tracker, fake_twilio, "moved")
    tracker.bind(key="moved", message_sid=fake_twilio.add_messages(1)[0])
    assert run_report(tasks, moved) == "moved on"

    # A permanent refusal: failed, with Twilio's code.
    fake_twilio.fail_next(Status(404))
    refused = confirmed(tracker, fake_twilio, "refused")
    assert run_report(tasks, refused) == "failed"
    failed = tracker.store.get(refused.tracking_id)
    assert failed is not None
    assert (failed.state, failed.error_code) == (State.FAILED, 20404)

    # A transient failure: the retry's lease is written (Retry-After honoured); run
    # eagerly, the task leaves it to the drain rather than retry at once.
    fake_twilio.fail_next(Status(429, retry_after=30))
    later = confirmed(tracker, fake_twilio, "later")
    before = time.time()
    assert run_report(tasks, later) == "left to the drain"
    waiting = tracker.store.get(later.tracking_id)
    assert waiting is not None
    assert (waiting.state, waiting.attempts, waiting.error_code) == (State.CONFIRMED, 1, 20429)
    assert waiting.lease_until >= before + 30 + shared.lease_seconds - 1
    assert held.message_sid not in {p.message_sid for p in fake_twilio.feedback}


def test_the_drain_task_delivers_what_is_due(
    app: Any, shared: Settings, fake_twilio: FakeTwilio
) -> None:
    tasks = tf_celery.setup(app, shared)
    tracker = tasks.tracker()
    for n in range(5):
        record = confirmed(tracker, fake_twilio, f"k{n}")
        tracker.store.defer(
            record.tracking_id,
            str(record.message_sid),
            lease_until=0.0,
            attempts=0,
            code=None,
            message=None,
        )
    result = tasks.drain.apply(kwargs={"timeout": 10}).get()
    assert result == {"taken": 5, "reported": 5, "left": 0}
    assert len(fake_twilio.feedback) == 5
    assert tasks.drain_entry(every=30) == {
        "task": "twilio_feedback.drain",
        "schedule": 30,
        "kwargs": {"timeout": 24.0},
        "options": {"expires": 30},
    }


def test_a_failed_publish_leaves_the_record_for_the_drain(
    shared: Settings, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    saved = tf_celery._current
    down = celery.Celery("down", broker="redis://127.0.0.1:1/0", set_as_current=False)
    down.conf.broker_connection_timeout = 0.5
    down.conf.task_publish_retry = False
    tf_celery.setup(down, shared)
    web = FeedbackTracker(shared)
    try:
        web.bind(key="k", message_sid=fake_twilio.add_messages(1)[0])
        assert web.confirm(key="k").confirmed  # the person's click counts all the same
        assert "could not enqueue 1 report task(s)" in caplog.text
        record = web.store.get(key_tracking_id("k"))
        assert record is not None
        assert record.state is State.CONFIRMED
    finally:
        web.close()
        tf_celery._current = saved
