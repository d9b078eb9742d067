"""Confirmations made while the store is down: deferred in memory, applied once it is back.

Real Redis and PostgreSQL servers, stopped and restarted by the tests; FakeTwilio behind
the reporter.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from twilio_feedback import FeedbackTracker, Settings, State
from twilio_feedback import deferred as deferred_module
from twilio_feedback.stores import store_from_url
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.tokens import TokenSigner

from .conftest import SECRET_KEY
from .servers import PostgresServer, RedisServer, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SERVERS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


class Outage:
    """A store server of one test, which the test stops and starts."""

    def __init__(self, backend: str) -> None:
        self.server: RedisServer | PostgresServer
        if backend == "redis":
            self.server = RedisServer(persistent=True)
            self.url = self.server.url
        else:
            self.server = PostgresServer()
            self.url = self.server.fresh_database()

    def down(self) -> None:
        self.server.halt()

    def up(self) -> None:
        self.server.start()


@pytest.fixture(params=SERVERS)
def outage(request: pytest.FixtureRequest) -> Iterator[Outage]:
    outage = Outage(request.param)
    yield outage
    outage.server.stop()


def _settings(fake: FakeTwilio, url: str, **extra: Any) -> Settings:
    return Settings(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        secret_key=SECRET_KEY,
        store=url,
        api_base_url=fake.base_url,
        request_timeout=5.0,
        **extra,
    )


def _replayed(tracker: FeedbackTracker, count: int, timeout: float = 30) -> None:
    wait_until(lambda: tracker.stats()["replayed"] >= count, timeout, f"{count} replays")


async def test_outage_confirmations_are_deferred_then_applied_and_reported_once(
    outage: Outage, fake_twilio: FakeTwilio
) -> None:
    tracker = FeedbackTracker(_settings(fake_twilio, outage.url))
    try:
        sids = fake_twilio.add_messages(16)
        tickets = [tracker.ticket() for _ in range(12)]
        for ticket, sid in zip(tickets, sids, strict=False):
            tracker.bind(ticket, sid)
        for n, sid in enumerate(sids[12:]):
            tracker.bind(key=f"code{n}", message_sid=sid)
        earlier = tickets[0]
        assert tracker.confirm_token(earlier.token).confirmed  # before the outage
        assert tracker.flush(10) == 0  # reported, and marked so in the store
        expired = TokenSigner(SECRET_KEY, timer=lambda: time.time() - 30 * 86400).issue()[1]

        outage.down()
        started = time.monotonic()
        results = [tracker.confirm_token(t.token) for t in tickets[1:8]]
        results += [await tracker.confirm_token_async(t.token) for t in tickets[8:]]
        results += [tracker.confirm(key="code0"), tracker.confirm(key="code1")]
        results += [await tracker.confirm_async(key=f"code{n}") for n in (2, 3)]
        assert time.monotonic() - started < 5.0  # one failed store call each, no waiting
        assert {r.status for r in results} == {"deferred"}
        assert all(r.ok and not r.confirmed and r.tracking_id for r in results)
        # A second click while it waits, and a click on a link confirmed before: deferred,
        # and kept once.
        assert tracker.confirm_token(tickets[1].token).status == "deferred"
        assert (await tracker.confirm_token_async(earlier.token)).status == "deferred"
        # What needs no store is decided as always.
        token = tickets[2].token
        forged = token[:-1] + ("B" if token.endswith("A") else "A")
        assert tracker.confirm_token(forged).status == "invalid"
        assert tracker.confirm_token(expired).status == "expired"
        stats = tracker.stats()
        assert stats["deferred"] == len(results) + 2
        assert stats["deferred_pending"] == len(results) + 1  # the repeat is kept once
        assert stats["replayed"] == stats["deferred_dropped"] == stats["error"] == 0

        outage.up()
        _replayed(tracker, len(results) + 1)
        posts = fake_twilio.wait_for_feedback(16, timeout=60)
        assert tracker.flush(10) == 0
        assert tracker.stats()["deferred_pending"] == 0
        # Every message reported exactly once: the earlier one was not posted again.
        assert Counter(p.message_sid for p in fake_twilio.feedback) == dict.fromkeys(sids, 1)
        assert len(posts) == 16
        store = tracker.store
        for ticket in tickets:
            record = store.get(ticket.tracking_id)
            assert record is not None
            assert record.state is State.REPORTED
        # The store took them as confirmations made when the person acted.
        assert tracker.confirm_token(tickets[5].token).status == "duplicate"
        assert (await tracker.confirm_async(key="code3")).status == "duplicate"
    finally:
        await tracker.aclose(timeout=5)


@pytest.mark.redis
def test_a_replay_that_finds_the_record_confirmed_changes_nothing(
    fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage("redis")
    # The replay backs off for a minute after its first failure, so that the other
    # process surely confirms first; close() then makes the replay's last attempt.
    monkeypatch.setattr(deferred_module, "RETRY_BASE", 60.0)
    monkeypatch.setattr(deferred_module, "RETRY_FLOOR", 60.0)
    tracker = FeedbackTracker(_settings(fake_twilio, outage.url))
    other = FeedbackTracker(_settings(fake_twilio, outage.url, deferred_size=0))
    try:
        (sid,) = fake_twilio.add_messages(1)
        ticket = tracker.ticket()
        tracker.bind(ticket, sid)
        outage.down()
        assert tracker.confirm_token(ticket.token).status == "deferred"
        outage.up()
        wait_until(lambda: other.confirm_token(ticket.token).confirmed, 30, "other confirms")
        assert other.flush(5) == 0
        before = tracker.store.get(ticket.tracking_id)
        assert tracker.close(timeout=5) == 0
        assert tracker.stats()["replayed"] == 1
        after = other.store.get(ticket.tracking_id)
        assert before is not None
        assert before.state is State.REPORTED
        assert after == before
        assert [p.message_sid for p in fake_twilio.feedback] == [sid]
        assert tracker.stats()["reported"] == 0
    finally:
        other.close(timeout=2)
        tracker.close(timeout=2)
        outage.server.stop()


@pytest.mark.redis
def test_a_full_buffer_answers_error_counts_and_logs_once(
    fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    outage = Outage("redis")
    tracker = FeedbackTracker(_settings(fake_twilio, outage.url, deferred_size=3))
    try:
        sids = fake_twilio.add_messages(6)
        for n, sid in enumerate(sids):
            tracker.bind(key=f"k{n}", message_sid=sid)
        outage.down()
        with caplog.at_level(logging.WARNING, logger="twilio_feedback"):
            statuses = [tracker.confirm(key=f"k{n}").status for n in range(6)]
        assert statuses == ["deferred"] * 3 + ["error"] * 3
        stats = tracker.stats()
        assert (stats["deferred"], stats["error"], stats["deferred_dropped"]) == (3, 3, 3)
        drops = [r for r in caplog.records if "answered 'error'" in r.getMessage()]
        assert len(drops) == 1  # rate-limited: one line for the burst
        assert all(SECRET_KEY not in r.getMessage() for r in caplog.records)

        outage.up()
        _replayed(tracker, 3)
        fake_twilio.wait_for_feedback(3, timeout=30)
        assert tracker.store.counts()["pending"] == 3  # the refused ones were not confirmed
        assert tracker.confirm(key="k5").confirmed  # and still can be
    finally:
        tracker.close(timeout=2)
        outage.server.stop()


@pytest.mark.redis
def test_zero_size_turns_deferral_off(fake_twilio: FakeTwilio) -> None:
    outage = Outage("redis")
    tracker = FeedbackTracker(_settings(fake_twilio, outage.url, deferred_size=0))
    try:
        tracker.bind(key="k", message_sid=fake_twilio.add_messages(1)[0])
        outage.down()
        assert tracker.confirm(key="k").status == "error"
        assert tracker.stats()["deferred_dropped"] == 1
    finally:
        tracker.close(timeout=1)
        outage.server.stop()


@pytest.mark.redis
def test_close_makes_a_last_replay_attempt(
    fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage("redis")
    # After its first failure the replay would wait a minute: only close() can apply it.
    monkeypatch.setattr(deferred_module, "RETRY_BASE", 60.0)
    monkeypatch.setattr(deferred_module, "RETRY_FLOOR", 60.0)
    tracker = FeedbackTracker(_settings(fake_twilio, outage.url))
    try:
        sids = fake_twilio.add_messages(3)
        for n, sid in enumerate(sids):
            tracker.bind(key=f"k{n}", message_sid=sid)
        outage.down()
        assert {tracker.confirm(key=f"k{n}").status for n in range(3)} == {"deferred"}
        outage.up()
        started = time.monotonic()
        assert tracker.close(timeout=10) == 0
        assert time.monotonic() - started < 10
        assert sorted(p.message_sid for p in fake_twilio.feedback) == sorted(sids)
        store = store_from_url(outage.url)
        try:
            assert store.counts()["reported"] == 3
        finally:
            store.close()
    finally:
        tracker.close(timeout=1)
        outage.server.stop()


@pytest.mark.redis
def test_close_with_the_store_still_down_is_bounded_and_says_what_was_lost(
    fake_twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    outage = Outage("redis")
    tracker = FeedbackTracker(_settings(fake_twilio, outage.url))
    try:
        tracker.bind(key="k", message_sid=fake_twilio.add_messages(1)[0])
        outage.down()
        assert tracker.confirm(key="k").status == "deferred"
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="twilio_feedback"):
            tracker.close(timeout=1)
        assert time.monotonic() - started < 3
        assert any("1 deferred confirmation(s)" in r.getMessage() for r in caplog.records)
        assert tracker.confirm(key="k").status == "error"  # closed: nothing more is kept
    finally:
        outage.server.stop()


@pytest.mark.redis
def test_a_forked_child_starts_with_an_empty_buffer(fake_twilio: FakeTwilio) -> None:
    outage = Outage("redis")
    tracker = FeedbackTracker(_settings(fake_twilio, outage.url))
    try:
        sids = fake_twilio.add_messages(2)
        tracker.bind(key="parent", message_sid=sids[0])
        tracker.bind(key="child", message_sid=sids[1])
        outage.down()
        assert tracker.confirm(key="parent").status == "deferred"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:  # the child: its own, empty buffer, which works; then leave at once
            code = 1
            try:
                empty = tracker.stats()["deferred_pending"] == 0
                deferred = tracker.confirm(key="child").status == "deferred"
                own = tracker.stats()["deferred_pending"] == 1
                code = 0 if empty and deferred and own else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("the forked child hung")
            time.sleep(0.02)
        assert os.waitstatus_to_exitcode(status[1]) == 0
        # The parent's buffer is its own, and it is still applied.
        assert tracker.stats()["deferred_pending"] == 1
        outage.up()
        _replayed(tracker, 1)
        assert [p.message_sid for p in fake_twilio.wait_for_feedback(1, timeout=30)] == [sids[0]]
    finally:
        tracker.close(timeout=2)
        outage.server.stop()


class _LostReply(MemoryStore):
    """A store whose first confirm is applied, then its answer lost (the connection cut as
    the server restarts)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = 1

    def confirm(self, tracking_id: str, **kwargs: Any) -> Any:
        answer = super().confirm(tracking_id, **kwargs)
        if self.cut:
            self.cut -= 1
            raise ConnectionError("connection closed by the server")
        return answer


def test_a_confirmation_applied_whose_answer_was_lost_is_reported_at_once(
    fake_twilio: FakeTwilio,
) -> None:
    store = _LostReply()
    tracker = FeedbackTracker(_settings(fake_twilio, "memory://").replace(store=store))
    try:
        (sid,) = fake_twilio.add_messages(1)
        ticket = tracker.ticket()
        tracker.bind(ticket, sid)
        assert tracker.confirm_token(ticket.token).status == "deferred"
        # The replay finds the record confirmed at this confirmation's own time: it was
        # this one, so it is reported now, not when the lease (15 s) ends.
        assert [p.message_sid for p in fake_twilio.wait_for_feedback(1, timeout=10)] == [sid]
        assert tracker.flush(5) == 0
        assert tracker.stats()["reported"] == 1
        assert tracker.confirm_token(ticket.token).status == "duplicate"
    finally:
        tracker.close(timeout=2)
