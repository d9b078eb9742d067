"""Background delivery over real HTTP to FakeTwilio: latency, retries, failures, leases,
flush, the outbox sweep, stuck workers, hooks and logs."""

from __future__ import annotations

import gc
import itertools
import logging
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from twilio_feedback import FeedbackError, FeedbackTracker, Record, Settings, State
from twilio_feedback.reporter import COUNTERS
from twilio_feedback.retry import backoff
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio, Hang, Status
from twilio_feedback.tracker import key_tracking_id

PHONE, SENDER = "+15558675310", "+15017122661"
MakeTracker = Callable[..., FeedbackTracker]


@pytest.fixture
def make_tracker(settings: Settings) -> Iterator[MakeTracker]:
    """Trackers on the emulator with settings overrides; all closed after the test."""
    made: list[FeedbackTracker] = []

    def make(**overrides: Any) -> FeedbackTracker:
        tracker = FeedbackTracker(settings.replace(**overrides))
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=0.5)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (a condition, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def sent(tracker: FeedbackTracker, key: str) -> str:
    return str(tracker.send(to=PHONE, from_=SENDER, body="code", key=key).sid)


def feedback_requests(fake: FakeTwilio) -> list[Any]:
    return [r for r in fake.requests if r.path.endswith("/Feedback.json")]


def record_of(tracker: FeedbackTracker, key: str) -> Record:
    record = tracker.store.get(key_tracking_id(key))
    assert record is not None
    return record


def test_confirm_does_not_wait_for_a_slow_twilio(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    sids = [sent(tracker, f"slow{n}") for n in range(5)]
    fake_twilio.latency = 2.0
    timings = []
    for n in range(5):
        started = time.perf_counter()
        result = tracker.confirm(key=f"slow{n}")
        timings.append(time.perf_counter() - started)
        assert result.confirmed
    assert max(timings) < 1.0  # Twilio takes 2 s per post
    assert fake_twilio.feedback == []
    posts = fake_twilio.wait_for_feedback(5, timeout=15)
    assert sorted(p.message_sid for p in posts) == sorted(sids)


def test_503_twice_then_200_is_reported_once(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    sent(tracker, "k")
    fake_twilio.fail_next(503, 503)
    assert tracker.confirm(key="k").confirmed
    assert tracker.flush(timeout=15) == 0
    assert [r.status for r in feedback_requests(fake_twilio)] == [503, 503, 200]
    assert len(fake_twilio.feedback) == 1
    assert record_of(tracker, "k").state is State.REPORTED
    stats = tracker.stats()
    assert (stats["retried"], stats["reported"], stats["failed"]) == (2, 1, 0)


@pytest.mark.parametrize("retry_after", [1, 2])
def test_429_retry_after_is_honoured(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio, retry_after: int
) -> None:
    sent(tracker, "k")
    fake_twilio.fail_next(Status(429, retry_after=retry_after))
    tracker.confirm(key="k")
    fake_twilio.wait_for_feedback(1, timeout=10)
    first, second = feedback_requests(fake_twilio)
    assert first.status == 429
    # Backoff alone would retry within 1 s; the gap is Twilio's Retry-After.
    assert second.time - first.time >= retry_after
    assert tracker.flush(timeout=5) == 0
    assert record_of(tracker, "k").state is State.REPORTED


def test_404_fails_after_one_attempt_with_the_code(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    failures: list[tuple[Record, FeedbackError]] = []
    with FeedbackTracker(settings, on_failed=lambda r, e: failures.append((r, e))) as tracker:
        tracker.bind(key="ghost", message_sid="SM" + "0" * 32)
        assert tracker.confirm(key="ghost").confirmed
        assert tracker.flush(timeout=5) == 0
        record = record_of(tracker, "ghost")
        assert (record.state, record.error_code) == (State.FAILED, 20404)
        assert record.error_message is not None
        assert "not found" in record.error_message
        assert (tracker.stats()["failed"], tracker.stats()["retried"]) == (1, 0)
    assert len(feedback_requests(fake_twilio)) == 1
    hooked, error = failures[0]
    assert (hooked.state, hooked.error_code, error.code, error.status) == (
        State.FAILED,
        20404,
        20404,
        404,
    )


def test_transient_failures_end_as_failed_when_the_retry_window_ends(
    make_tracker: MakeTracker, fake_twilio: FakeTwilio
) -> None:
    tracker = make_tracker(retry_window=1.0)
    sent(tracker, "k")
    fake_twilio.fail_always(503)
    tracker.confirm(key="k")
    assert tracker.flush(timeout=10) == 0
    record = record_of(tracker, "k")
    assert (record.state, record.error_code) == (State.FAILED, 20503)
    assert record.attempts >= 1
    # The last attempt happens no later than the window's end.
    assert feedback_requests(fake_twilio)[-1].time <= (record.confirmed_at or 0) + 1.0 + 0.5
    assert tracker.stats()["failed"] == 1


def test_a_retry_waiting_in_memory_keeps_a_short_lease_the_heartbeat_renews(
    settings: Settings, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    import twilio_feedback.reporter
    import twilio_feedback.retry

    monkeypatch.setattr(twilio_feedback.retry, "backoff", lambda attempt, **_: 4.0)
    store = MemoryStore()
    shared = settings.replace(store=store, lease_seconds=1.5)  # renewed every 0.5 s
    # Another process sweeping the same store as often as it can.
    with FeedbackTracker(shared.replace(sweep_interval=0.02)) as other:
        with FeedbackTracker(shared) as tracker:
            sent(tracker, "k")
            fake_twilio.fail_next(503)
            tracker.confirm(key="k")
            ahead: list[float] = []

            def reported() -> bool:
                record = record_of(tracker, "k")
                if record.state is State.REPORTED:
                    return True
                ahead.append(record.lease_until - time.time())
                return False

            # The retry waits 4 s, longer than two leases: the heartbeat keeps the lease,
            # which never reaches past now + lease_seconds.
            assert wait_until(reported, 10)
            assert len(ahead) > 50
            assert max(ahead) <= 1.5
            assert tracker.flush(timeout=5) == 0
        assert other.flush(timeout=1) == 0
        assert other.stats()["swept"] == 0
    assert len(fake_twilio.feedback) == 1
    assert [r.status for r in feedback_requests(fake_twilio)] == [503, 200]


def test_a_far_retry_after_is_left_to_the_sweep(
    make_tracker: MakeTracker, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    import twilio_feedback.reporter
    import twilio_feedback.retry

    monkeypatch.setattr(twilio_feedback.reporter, "HOLD_LIMIT", 1.0)
    tracker = make_tracker(lease_seconds=0.5, sweep_interval=0.05)
    sent(tracker, "k")
    fake_twilio.fail_next(Status(429, retry_after=1.5))
    tracker.confirm(key="k")
    assert fake_twilio.wait_for(lambda: len(feedback_requests(fake_twilio)) >= 1, 5)
    # Not held in memory: nothing pending, the record waits in the store, due at its time.
    assert wait_until(lambda: tracker.stats()["pending"] == 0, 5)
    assert record_of(tracker, "k").state is State.CONFIRMED
    fake_twilio.wait_for_feedback(1, timeout=10)
    first, second = feedback_requests(fake_twilio)
    assert second.time - first.time >= 1.5
    assert tracker.stats()["swept"] == 1


@pytest.mark.timeout(30)
def test_request_timeout_bounds_a_hanging_twilio(
    make_tracker: MakeTracker, fake_twilio: FakeTwilio
) -> None:
    tracker = make_tracker(request_timeout=0.5)
    sid = sent(tracker, "k")
    fake_twilio.fail_next(Hang())
    started = time.monotonic()
    tracker.confirm(key="k")
    # The hung post times out after 0.5 s and the retry (backoff <= 1 s) goes through,
    # while the emulator still holds the first request.
    assert fake_twilio.wait_for_feedback(1, timeout=10)[0].message_sid == sid
    assert time.monotonic() - started < 3.0
    assert fake_twilio.in_flight == 1
    assert tracker.stats()["retried"] == 1
    fake_twilio.release()


@pytest.mark.timeout(30)
def test_flush_returns_on_time_while_twilio_hangs(
    make_tracker: MakeTracker, fake_twilio: FakeTwilio
) -> None:
    tracker = make_tracker(request_timeout=20)
    sent(tracker, "k")
    fake_twilio.fail_next(Hang())
    tracker.confirm(key="k")
    started = time.monotonic()
    pending = tracker.flush(timeout=0.5)
    elapsed = time.monotonic() - started
    assert pending == 1
    assert 0.45 <= elapsed < 5  # the timeout, not the hang (up to request_timeout, 20 s)
    started = time.monotonic()
    assert tracker.close(timeout=0.3) == 1  # and close too: the record stays confirmed
    assert time.monotonic() - started < 5
    assert record_of(tracker, "k").state is State.CONFIRMED
    fake_twilio.release()


class TrickleServer(socketserver.ThreadingTCPServer):
    """Answers its first ``trickle`` connections one byte every ``every`` seconds, until
    stopped: no single read ever times out, so only a watchdog frees the worker. Later
    connections get a 200."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, trickle: int = 1, every: float = 0.1) -> None:
        super().__init__(("127.0.0.1", 0), _TrickleHandler)
        self.trickle = trickle
        self.every = every
        self.stopped = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.stopped.set()
        self.shutdown()
        self.server_close()


class _TrickleHandler(socketserver.StreamRequestHandler):
    server: TrickleServer

    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        with self.server.lock:
            self.server.connections += 1
            trickle = self.server.connections <= self.server.trickle
        if trickle:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.server.stopped.wait(self.server.every):
                self.wfile.write(b"a")
            return
        path = urlsplit(head.split(b" ")[1].decode()).path.split("/")
        body = (
            f'{{"account_sid": "{path[3]}", "message_sid": "{path[5]}", "outcome": "confirmed"}}'
        ).encode()
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )


@pytest.mark.timeout(60)
def test_a_worker_stuck_past_its_timeout_is_replaced(settings: Settings) -> None:
    server = TrickleServer()
    stuck_sid, next_sid = "SM" + "1" * 32, "SM" + "2" * 32
    tracker = FeedbackTracker(
        settings.replace(api_base_url=server.url, request_timeout=0.3, reporter_concurrency=1)
    )
    try:
        tracker.bind(key="stuck", message_sid=stuck_sid)
        tracker.bind(key="next", message_sid=next_sid)
        tracker.confirm(key="stuck")
        # 3 x 0.3 s + 1 s without a timeout firing: the watchdog gives up on the worker.
        assert wait_until(lambda: tracker.stats()["stuck"] == 1, 10)
        assert tracker.flush(timeout=1) == 0
        assert record_of(tracker, "stuck").state is State.CONFIRMED  # left for the sweep
        tracker.confirm(key="next")
        assert tracker.flush(timeout=5) == 0
        assert record_of(tracker, "next").state is State.REPORTED
        assert tracker.stats()["reported"] == 1
    finally:
        server.stop()
        tracker.close(timeout=1)


@pytest.mark.timeout(60)
def test_delivery_goes_on_while_posts_keep_getting_stuck(settings: Settings) -> None:
    # More stuck posts than workers: each one given up on is replaced, so later
    # confirmations are still reported.
    server = TrickleServer(trickle=3)
    tracker = FeedbackTracker(
        settings.replace(api_base_url=server.url, request_timeout=0.3, reporter_concurrency=1)
    )
    try:
        for n in range(3):
            tracker.bind(key=f"stuck{n}", message_sid=f"SM{n:032x}")
            tracker.confirm(key=f"stuck{n}")
        tracker.bind(key="next", message_sid="SM" + "f" * 32)
        tracker.confirm(key="next")
        assert wait_until(lambda: record_of(tracker, "next").state is State.REPORTED, 20)
        assert tracker.stats()["stuck"] == 3
        assert tracker.stats()["reported"] == 1
    finally:
        server.stop()
        tracker.close(timeout=1)


@pytest.mark.timeout(60)
def test_workers_given_up_on_are_bounded(settings: Settings) -> None:
    server = TrickleServer(trickle=100, every=0.02)  # every post trickles until stopped
    before = set(threading.enumerate())
    tracker = FeedbackTracker(
        settings.replace(api_base_url=server.url, request_timeout=0.3, reporter_concurrency=1)
    )

    def workers() -> int:
        return sum(
            t.name.startswith("twilio-feedback-worker") and t.is_alive()
            for t in set(threading.enumerate()) - before
        )

    try:
        for n in range(8):
            tracker.bind(key=f"k{n}", message_sid=f"SM{n:032x}")
            tracker.confirm(key=f"k{n}")
        bound = 4 * 1  # ABANDONED_PER_WORKER * reporter_concurrency
        assert wait_until(lambda: tracker.stats()["stuck"] == bound, 20)
        # Past the bound, the stuck worker in the pool is not replaced: no more threads.
        assert not wait_until(lambda: tracker.stats()["stuck"] > bound, 2.0)
        assert workers() == 1 + bound
    finally:
        server.stop()
        tracker.close(timeout=1)
    assert wait_until(lambda: workers() == 0, 10)


def test_hooks_that_raise_do_not_kill_workers(
    settings: Settings, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[Record] = []

    def explode(record: Record) -> None:
        reported.append(record)
        raise RuntimeError("hook bug")

    def explode_too(record: Record, error: FeedbackError) -> None:
        raise RuntimeError("failure hook bug")

    with FeedbackTracker(
        settings.replace(reporter_concurrency=1), on_reported=explode, on_failed=explode_too
    ) as tracker:
        tracker.bind(key="ghost", message_sid="SM" + "0" * 32)
        tracker.confirm(key="ghost")  # 404: on_failed raises
        for n in range(3):
            sent(tracker, f"k{n}")
            tracker.confirm(key=f"k{n}")  # on_reported raises every time
        assert tracker.flush(timeout=5) == 0
        assert (tracker.stats()["reported"], tracker.stats()["failed"]) == (3, 1)
    assert len(fake_twilio.feedback) == 3
    assert all(r.state is State.REPORTED for r in reported)
    assert "hook bug" in caplog.text
    assert "failure hook bug" in caplog.text


def test_no_reported_copy_is_made_without_a_hook(
    settings: Settings, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The copy handed to on_reported costs a dataclasses.replace (~4 us) a report: made
    # only when a hook will read it.
    copies: list[str] = []
    replace = Record.replace

    def counted(self: Record, **changes: Any) -> Record:
        if sys._getframe(1).f_globals["__name__"] == "twilio_feedback.reporter":
            copies.append(self.tracking_id)
        return replace(self, **changes)

    monkeypatch.setattr(Record, "replace", counted)
    hooked: list[Record] = []
    for hook in (None, hooked.append):
        with FeedbackTracker(settings.replace(store=MemoryStore()), on_reported=hook) as tracker:
            sent(tracker, "k")
            assert tracker.confirm(key="k").confirmed
            assert tracker.flush(timeout=5) == 0
            assert tracker.stats()["reported"] == 1
        if hook is None:
            assert copies == []
    assert [r.state for r in hooked] == [State.REPORTED]
    assert copies == [hooked[0].tracking_id]


def test_full_queue_drops_are_counted_and_swept_later(
    make_tracker: MakeTracker, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = make_tracker(
        reporter_concurrency=1, queue_size=1, lease_seconds=0.3, sweep_interval=0.05
    )
    for n in range(3):
        sent(tracker, f"k{n}")
    fake_twilio.fail_next(Hang())
    tracker.confirm(key="k0")  # taken by the only worker, which hangs
    assert fake_twilio.wait_for(lambda: fake_twilio.in_flight == 1, 5)
    tracker.confirm(key="k1")  # fills the queue
    started = time.perf_counter()
    assert tracker.confirm(key="k2").confirmed  # cannot be queued
    assert time.perf_counter() - started < 1.0  # not waiting for room behind the hang
    assert tracker.stats()["dropped"] == 1
    assert "left in the store" in caplog.text
    assert record_of(tracker, "k2").state is State.CONFIRMED
    fake_twilio.release()
    posts = fake_twilio.wait_for_feedback(3, timeout=10)
    assert {p.message_sid for p in posts} == {m.sid for m in fake_twilio.messages}
    assert tracker.stats()["swept"] >= 1


def test_sweep_redrives_confirmations_left_by_a_dead_reporter(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    # Stands in for a restart with a durable store (see test_delivery_e2e for SQLite and
    # a real SIGKILL): the store outlives the first tracker's reporter.
    store = MemoryStore()
    shared = settings.replace(store=store, lease_seconds=0.2, sweep_interval=0.05)
    first = FeedbackTracker(shared)
    fake_twilio.fail_always(503)
    for n in range(5):
        sent(first, f"k{n}")
        assert first.confirm(key=f"k{n}").confirmed
    first.reporter.close(timeout=0)  # gone with its reports undone, as a crash leaves them
    for worker in list(first.reporter._workers):  # no post of its own still in flight
        worker.join(10)
    fake_twilio.clear_faults()
    assert store.counts()["confirmed"] == 5
    with FeedbackTracker(shared) as second:  # no request needed: the sweep starts at once
        posts = fake_twilio.wait_for_feedback(5, timeout=10)
        assert {p.message_sid for p in posts} == {m.sid for m in fake_twilio.messages}
        assert second.flush(5) == 0
        assert second.stats()["swept"] == 5
    assert store.counts()["reported"] == 5


class SlowClaims(MemoryStore):
    """A memory store whose claims answer 0.3 s after taking their records, as a busy
    database's might; ``entered`` is set once the scheduler's sweep is in one."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        claimed = super().claim(now=now, lease_until=lease_until, limit=limit)
        if claimed and threading.current_thread().name == "twilio-feedback-scheduler":
            self.entered.set()
            time.sleep(0.3)  # the slow database, not a synchronisation
        return claimed


def test_a_sweep_returns_once_a_concurrent_sweep_holds_what_it_claimed(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    # `twilio-feedback drain` sweeps beside the scheduler's own sweep: when its sweep finds
    # nothing, what the other one claimed must already count as pending, or the drain
    # thinks it is done and leaves those records in a closed reporter's queue.
    store = SlowClaims()
    now = time.time()
    for sid in fake_twilio.add_messages(3):
        store.add(Record(f"t{sid}", expires_at=now + 600, state=State.CONFIRMED, message_sid=sid))
    with FeedbackTracker(settings.replace(store=store)) as tracker:  # sweeps at once
        assert store.entered.wait(5)
        assert tracker.reporter.sweep() == 0  # the scheduler's sweep took them
        assert tracker.stats()["pending"] + tracker.stats()["reported"] == 3
        assert tracker.flush(timeout=5) == 0
        assert tracker.stats()["swept"] == 3
    assert len(fake_twilio.feedback) == 3


def test_concurrent_confirmations_are_each_reported_once(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    for n in range(20):
        sent(tracker, f"k{n}")
    threads = [
        threading.Thread(target=tracker.confirm, kwargs={"key": f"k{n % 20}"}) for n in range(60)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert tracker.flush(10) == 0
    assert len(fake_twilio.feedback) == 20
    stats = tracker.stats()
    assert (stats["confirmed"], stats["duplicate"], stats["reported"]) == (20, 40, 20)


def test_stats_has_every_counter(tracker: FeedbackTracker) -> None:
    stats = tracker.stats()
    for name in (*COUNTERS, "confirmed", "pending"):
        assert stats[name] == 0


def test_secrets_are_never_logged(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tracker.send(to=PHONE, from_=SENDER, body="Open {link}", link="https://app.example/c")
    token = parse_qs(urlsplit(fake_twilio.messages[0].body.split()[-1]).query)["id"][0]
    fake_twilio.fail_next(503, Status(429, retry_after=0))
    assert tracker.confirm_token(token).confirmed
    tracker.bind(key="ghost", message_sid="SM" + "0" * 32)
    tracker.confirm(key="ghost")
    assert tracker.flush(timeout=10) == 0
    assert "failed for good" in caplog.text
    assert "retry 1" in caplog.text
    settings = tracker.settings
    for secret in (settings.auth_token, token, *settings.secret_keys):
        assert secret
        assert secret not in caplog.text


def test_an_unreferenced_tracker_stops_its_threads(settings: Settings) -> None:
    tracker = FeedbackTracker(settings)
    threads = [*tracker.reporter._workers, *tracker.reporter._threads]
    assert len(threads) == settings.reporter_concurrency + 2  # + scheduler and heartbeat
    assert all(t.is_alive() for t in threads)
    del tracker
    gc.collect()
    assert wait_until(lambda: not any(t.is_alive() for t in threads), 5)


def test_close_is_idempotent_and_later_confirmations_wait_in_the_store(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    sent(tracker, "k")
    assert tracker.close() == 0
    assert tracker.close() == 0
    assert tracker.confirm(key="k").confirmed
    assert tracker.stats()["dropped"] == 1
    assert record_of(tracker, "k").state is State.CONFIRMED
    assert fake_twilio.feedback == []


def test_backoff_is_exponential_with_equal_jitter_and_a_floor() -> None:
    for attempt in range(60):
        assert 0.5 <= backoff(attempt) <= 60.0
    assert all(0.5 <= backoff(1) <= 1.0 for _ in range(200))
    third = [backoff(3) for _ in range(500)]
    assert 2.0 <= min(third) < 2.5
    assert 3.5 < max(third) <= 4.0
    assert min(backoff(40) for _ in range(200)) >= 30.0


def test_a_backlog_drains_as_soon_as_twilio_answers_again(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    import twilio_feedback.reporter
    import twilio_feedback.retry

    # Every retry backs off 30 s: without the recovery path, the backlog would wait that long.
    monkeypatch.setattr(twilio_feedback.retry, "backoff", lambda attempt, **_: 30.0)
    fake_twilio.fail_always(503)
    for n in range(10):
        sent(tracker, f"k{n}")
        tracker.confirm(key=f"k{n}")
    fake_twilio.wait_for_requests(10 + 10, timeout=10)  # 10 creates, 10 failed posts
    fake_twilio.clear_faults()
    sent(tracker, "fresh")
    tracker.confirm(key="fresh")  # succeeds, and so shows Twilio is back
    assert len(fake_twilio.wait_for_feedback(11, timeout=5)) == 11


def test_retry_after_is_kept_when_twilio_recovers(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    sent(tracker, "limited")
    fake_twilio.fail_next(Status(429, retry_after=2))
    tracker.confirm(key="limited")
    fake_twilio.wait_for_requests(2, timeout=5)
    sent(tracker, "other")
    tracker.confirm(key="other")
    fake_twilio.wait_for_feedback(2, timeout=10)
    posts = [r for r in fake_twilio.requests if r.path.endswith("Feedback.json")]
    limited = [r for r in posts if r.status in (429, 200)]
    assert posts[0].status == 429
    # The rate-limited record waited its 2 s although another post succeeded meanwhile.
    assert limited[-1].time - posts[0].time >= 2.0


# -- outcomes land on the record that was reported ------------------------------------------


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)],
)
def any_store(request: pytest.FixtureRequest) -> Any:
    """A fresh store of each kind the reporter writes outcomes to."""
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        return f"sqlite:///{request.getfixturevalue('tmp_path')}/feedback.db"
    return request.getfixturevalue("redis_url")


@pytest.mark.parametrize("first_answer", ["slow", "503 then retry"])
def test_a_key_bound_again_while_its_report_is_in_flight_reports_both_messages(
    make_tracker: MakeTracker, fake_twilio: FakeTwilio, any_store: Any, first_answer: str
) -> None:
    # docs/tracking.md's key=f"login:{user.id}": code 2 is sent while code 1's report
    # is still going out, and code 1's outcome must not land on code 2's record.
    tracker = make_tracker(store=any_store)
    fake_twilio.latency = 0.5  # every answer, message creation included
    first = sent(tracker, "login:42")
    if first_answer == "503 then retry":
        fake_twilio.fail_next(503)
    assert tracker.confirm(key="login:42").confirmed
    if first_answer == "slow":
        assert fake_twilio.wait_for(lambda: fake_twilio.in_flight == 1, 5)
    else:
        fake_twilio.wait_for_requests(lambda r: r.status == 503, timeout=5)
    second = sent(tracker, "login:42")  # the first report is answered meanwhile
    assert tracker.confirm(key="login:42").status == "confirmed"
    posts = fake_twilio.wait_for_feedback(2, timeout=10)
    assert sorted(p.message_sid for p in posts) == sorted([first, second])
    assert tracker.flush(timeout=5) == 0
    record = record_of(tracker, "login:42")
    assert (record.state, record.message_sid) == (State.REPORTED, second)
    assert tracker.stats()["reported"] == 2


# -- Retry-After and rejected credentials -----------------------------------------------------


@pytest.mark.parametrize("retry_after", [0, -1, float("nan")])
def test_a_retry_after_of_zero_or_nonsense_is_no_tight_loop(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio, retry_after: float
) -> None:
    sent(tracker, "k")
    fake_twilio.fail_always(Status(429, retry_after=retry_after))
    tracker.confirm(key="k")
    # The backoff's floor alone spaces the posts: at 0 s, >= 0.5 s, >= 1.5 s, >= 3.5 s.
    assert not fake_twilio.wait_for(lambda: len(feedback_requests(fake_twilio)) > 4, 3.0)
    posts = feedback_requests(fake_twilio)
    assert 2 <= len(posts) <= 4
    assert min(b.time - a.time for a, b in itertools.pairwise(posts)) >= 0.5
    assert record_of(tracker, "k").state is State.CONFIRMED


def test_a_huge_retry_after_is_capped_at_the_retry_window(
    make_tracker: MakeTracker, fake_twilio: FakeTwilio
) -> None:
    tracker = make_tracker(retry_window=2.0)
    sent(tracker, "k")
    fake_twilio.fail_next(Status(429, retry_after=86400))
    tracker.confirm(key="k")
    fake_twilio.wait_for_feedback(1, timeout=10)
    assert tracker.flush(timeout=5) == 0
    record = record_of(tracker, "k")
    assert record.state is State.REPORTED
    first, second = feedback_requests(fake_twilio)
    assert first.status == 429
    # The last attempt happens at the window's end, instead of failing at once.
    assert record.confirmed_at is not None
    assert abs(second.time - (record.confirmed_at + 2.0)) < 0.5


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_rejected_credentials_keep_records_confirmed_until_they_are_fixed(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    sids = [sent(tracker, f"k{n}") for n in range(5)]
    good, rotated = fake_twilio.auth_token, "0123456789abcdef" * 2
    fake_twilio.add_account(fake_twilio.account_sid, rotated)  # ours is no longer accepted
    for n in range(5):
        assert tracker.confirm(key=f"k{n}").confirmed
    fake_twilio.wait_for_requests(5, where=lambda r: r.status == 401, timeout=5)
    assert wait_until(lambda: all(record_of(tracker, f"k{n}").attempts for n in range(5)), 5)
    assert {record_of(tracker, f"k{n}").state for n in range(5)} == {State.CONFIRMED}
    # One line for the five refusals, saying what to fix, and no secret.
    (error,) = errors_logged(caplog)
    assert "TWILIO_AUTH_TOKEN" in error
    assert "report(s) refused" in error
    for secret in (good, rotated):
        assert secret not in caplog.text
    assert len(feedback_requests(fake_twilio)) == 5  # retried at the long backoff, not now

    fake_twilio.add_account(fake_twilio.account_sid, good)  # the operator fixes it
    sids.append(sent(tracker, "fresh"))
    tracker.confirm(key="fresh")  # its success shows the credentials work again
    posts = fake_twilio.wait_for_feedback(6, timeout=10)
    assert sorted(p.message_sid for p in posts) == sorted(sids)
    assert tracker.flush(timeout=5) == 0
    assert {record_of(tracker, f"k{n}").state for n in range(5)} == {State.REPORTED}
    assert tracker.stats()["failed"] == 0


def test_rejected_credentials_are_logged_once_per_interval(
    tracker: FeedbackTracker,
    fake_twilio: FakeTwilio,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import twilio_feedback.reporter
    import twilio_feedback.retry

    monkeypatch.setattr(tracker.reporter._refusals, "every", 0.5)
    monkeypatch.setattr(twilio_feedback.retry, "backoff", lambda attempt, **_: 0.1)
    for n in range(3):
        sent(tracker, f"k{n}")
    good = fake_twilio.auth_token
    fake_twilio.add_account(fake_twilio.account_sid, "0123456789abcdef" * 2)
    started = time.monotonic()
    for n in range(3):
        tracker.confirm(key=f"k{n}")
    refused = fake_twilio.wait_for_requests(40, where=lambda r: r.status == 401, timeout=10)
    elapsed = time.monotonic() - started
    errors = errors_logged(caplog)
    assert 2 <= len(errors) <= elapsed / 0.5 + 1
    assert len(refused) >= 40
    assert all("TWILIO_AUTH_TOKEN" in line for line in errors)
    fake_twilio.add_account(fake_twilio.account_sid, good)
    assert tracker.flush(timeout=5) == 0
