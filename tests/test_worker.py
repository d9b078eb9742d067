"""The delivery worker: a Reporter driven without rest over a shared store, stopped
cleanly (posts in flight finish, the rest goes back to the store at once); and the
``twilio-feedback worker`` command around it, as a real process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from twilio_feedback import FeedbackTracker, Settings, State
from twilio_feedback.stores.base import store_from_url
from twilio_feedback.stores.sql import SQLStore
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.worker import Worker, WorkerResult

from .servers import wait_until

pytest.importorskip("sqlalchemy")
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'feedback.db'}"


@pytest.fixture
def web(settings: Settings, url: str) -> Iterator[FeedbackTracker]:
    """A web process's tracker: reporter off, confirming into the shared store."""
    tracker = FeedbackTracker(settings.replace(store=url, reporter="off"))
    yield tracker
    tracker.close(timeout=1)


def confirm_many(
    web: FeedbackTracker, fake: FakeTwilio, count: int, prefix: str = "k"
) -> list[str]:
    sids = fake.add_messages(count)
    for n, sid in enumerate(sids):
        web.bind(key=f"{prefix}{n}", message_sid=sid)
        assert web.confirm(key=f"{prefix}{n}").confirmed
    return sids


class Running:
    """A Worker on its own tracker, run in a thread."""

    def __init__(self, settings: Settings, **options: float | int) -> None:
        self.tracker = FeedbackTracker(settings.replace(reporter="off"))
        self.stopped = threading.Event()
        options = {"poll_interval": 0.1, **options}
        self.worker = Worker(self.tracker, **options)  # type: ignore[arg-type]
        self.result: WorkerResult | None = None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.worker.run()
        finally:
            self.stopped.set()

    def stop(self, grace: float | None = None, timeout: float = 15) -> WorkerResult:
        self.worker.stop(grace)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        self.tracker.close(timeout=1)
        assert self.result is not None
        return self.result


def test_a_worker_delivers_what_web_processes_confirm(
    web: FeedbackTracker, settings: Settings, url: str, fake_twilio: FakeTwilio
) -> None:
    sids = confirm_many(web, fake_twilio, 30)
    # The scheduler's own sweep comes a minute later: only the worker's polls take them.
    running = Running(settings.replace(store=url, sweep_interval=60), concurrency=4)
    try:
        fake_twilio.wait_for_feedback(30, timeout=20)
        # New confirmations are taken as they come, within the poll interval (0.1 s).
        more = confirm_many(web, fake_twilio, 1, prefix="more")
        started = time.monotonic()
        fake_twilio.wait_for_feedback(31, timeout=30)
        assert time.monotonic() - started < 10
    finally:
        result = running.stop()
    assert (result.reported, result.failed, result.left) == (31, 0, 0)
    assert Counter(p.message_sid for p in fake_twilio.feedback) == Counter([*sids, *more])
    assert web.store.counts()["reported"] == 31


def test_two_workers_share_the_outbox_and_post_each_once(
    web: FeedbackTracker, settings: Settings, url: str, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.latency = 0.02
    sids = confirm_many(web, fake_twilio, 200)
    shared = settings.replace(store=url)
    first, second = Running(shared, concurrency=4), Running(shared, concurrency=4)
    try:
        fake_twilio.wait_for_feedback(200, timeout=30)
    finally:
        results = [first.stop(), second.stop()]
    assert Counter(p.message_sid for p in fake_twilio.feedback) == Counter(sids)
    # A worker holds at most PREFETCH x concurrency records: both got a share.
    assert all(result.reported > 0 for result in results)
    assert sum(result.reported for result in results) == 200


def test_a_worker_rides_out_a_store_outage(
    web: FeedbackTracker, settings: Settings, url: str, fake_twilio: FakeTwilio
) -> None:
    from .test_reporter_modes import Switch

    store = Switch(SQLStore(url), "claim", "renew", "purge", "counts")
    store.down = True
    running = Running(settings.replace(store=store), concurrency=2)
    try:
        sids = confirm_many(web, fake_twilio, 5)
        wait_until(lambda: store.failures >= 5, 10, "a few sweeps during the outage")
        assert not running.stopped.is_set()
        assert fake_twilio.feedback == []
        store.down = False
        fake_twilio.wait_for_feedback(5, timeout=10)
    finally:
        result = running.stop()
    assert result.reported == 5
    assert sorted(p.message_sid for p in fake_twilio.feedback) == sorted(sids)


def test_stop_finishes_the_posts_in_flight_and_hands_the_rest_back(
    web: FeedbackTracker, settings: Settings, url: str, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.latency = 1.0
    confirm_many(web, fake_twilio, 40)
    running = Running(settings.replace(store=url), concurrency=2)
    assert fake_twilio.wait_for(lambda: fake_twilio.in_flight == 2, 10)
    started = time.monotonic()
    result = running.stop(grace=10)
    # The two posts in flight (1 s), not the queue (19 s) nor the grace (10 s).
    assert time.monotonic() - started < 8
    assert (result.reported, result.left) == (2, 0)
    counts = web.store.counts()
    assert (counts["reported"], counts["confirmed"]) == (2, 38)
    # Handed back at once: another process's sweep takes them now, not a lease later.
    now = time.time()
    assert len(web.store.claim(now=now, lease_until=now + 15, limit=100)) == 38


def test_stop_ends_a_busy_round_without_waiting_for_the_poll_interval(
    web: FeedbackTracker, settings: Settings, url: str, fake_twilio: FakeTwilio
) -> None:
    # A round over a backlog lasts up to the poll interval: a stop ends it at once, and
    # the backlog (400 posts at 0.1 s, two at a time: 20 s) goes back to the store.
    fake_twilio.latency = 0.1
    confirm_many(web, fake_twilio, 400)
    running = Running(settings.replace(store=url), concurrency=2, poll_interval=60)
    fake_twilio.wait_for_feedback(1, timeout=20)
    result = running.stop(timeout=15)
    assert result.left == 0
    counts = web.store.counts()
    assert counts["reported"] == result.reported
    assert counts["confirmed"] >= 200, counts  # most of the backlog was never started


def test_stop_with_no_grace_leaves_the_posts_in_flight_confirmed(
    web: FeedbackTracker, settings: Settings, url: str, fake_twilio: FakeTwilio
) -> None:
    fake_twilio.latency = 30.0
    confirm_many(web, fake_twilio, 4)
    running = Running(settings.replace(store=url, request_timeout=30.0), concurrency=2)
    assert fake_twilio.wait_for(lambda: fake_twilio.in_flight == 2, 10)
    started = time.monotonic()
    result = running.stop(grace=0)
    assert time.monotonic() - started < 10  # not the posts in flight (30 s)
    assert result.left == 2
    assert web.store.counts()["confirmed"] == 4  # nothing lost; two wait for their lease


def test_a_worker_logs_its_counts_every_interval(
    web: FeedbackTracker,
    settings: Settings,
    url: str,
    fake_twilio: FakeTwilio,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="twilio_feedback.worker")
    confirm_many(web, fake_twilio, 5)
    running = Running(settings.replace(store=url), log_interval=0.3)
    try:
        fake_twilio.wait_for_feedback(5, timeout=10)
        wait_until(lambda: "5 reported, 0 failed, 0 retried" in caplog.text, 10, "a count line")
    finally:
        running.stop()
    assert "worker started: 4 post(s) at once" in caplog.text
    assert "worker stopped" in caplog.text


# -- the command -------------------------------------------------------------------------


def worker_env(fake: FakeTwilio, url: str, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(
        TWILIO_ACCOUNT_SID=fake.account_sid,
        TWILIO_AUTH_TOKEN=fake.auth_token,
        TWILIO_FEEDBACK_API_BASE_URL=fake.base_url,
        TWILIO_FEEDBACK_STORE=url,
        TWILIO_FEEDBACK_REPORTER="off",  # the env the web processes share
        PYTHONWARNINGS="ignore",
    )
    env.update({f"TWILIO_FEEDBACK_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_worker(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "twilio_feedback.cli", "worker", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_worker_command_stops_cleanly_on_a_signal(
    web: FeedbackTracker, url: str, fake_twilio: FakeTwilio, tmp_path: Path, sig: int
) -> None:
    fake_twilio.latency = 0.5
    sids = confirm_many(web, fake_twilio, 40)
    log = tmp_path / "worker.log"
    process = start_worker(
        worker_env(fake_twilio, url), log, "--concurrency", "4", "--log-interval", "0.5"
    )
    try:
        # The process's start (imports alone took 17 s on a loaded 2-core machine) and its
        # exit are waited for, not timed.
        fake_twilio.wait_for_feedback(4, timeout=90)
        wait_until(lambda: "reported, 0 failed" in log.read_text(), 30, "a count line")
        process.send_signal(sig)
        assert process.wait(60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    assert "worker stopped:" in text
    store = store_from_url(url)
    try:
        counts = store.counts()
        reported = {p.message_sid for p in fake_twilio.feedback}
        assert counts["reported"] == len(reported)
        assert counts["confirmed"] == 40 - len(reported) > 0  # the rest, still confirmed
        # ... and due at once for the next worker.
        now = time.time()
        left = store.claim(now=now, lease_until=now + 15, limit=100)
        assert {r.message_sid for r in left} == set(sids) - reported
        assert all(r.state is State.CONFIRMED for r in left)
    finally:
        store.close()


@pytest.mark.slow
def test_the_worker_command_exit_codes(fake_twilio: FakeTwilio, tmp_path: Path) -> None:
    def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "twilio_feedback.cli", "worker", *args],
            env=worker_env(fake_twilio, url),
            capture_output=True,
            text=True,
            timeout=30,
        )

    memory = run("memory://")
    assert memory.returncode == 2
    assert "memory://" in memory.stderr
    down = run("redis://127.0.0.1:1/0")
    assert down.returncode == 1
    assert "redis://127.0.0.1:1/0" in down.stderr
    bad = run(f"sqlite:///{tmp_path / 'f.db'}", "--concurrency", "0")
    assert bad.returncode == 2
