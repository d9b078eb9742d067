"""The Store conformance suite: every backend, yours included, passes the same tests.

Subclass :class:`StoreConformance` in your test suite and provide a ``store`` fixture
that yields a fresh, empty store::

    from twilio_feedback.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self):
            store = MyStore(...)
            yield store
            store.close()
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ..records import Record, State
from ..stores.base import Store

__all__ = ["StoreConformance"]

SID = "SM" + "ab" * 16
ACCOUNT = "AC" + "cd" * 16


def _record(tracking_id: str = "t1", *, ttl: float = 3600.0, sid: str | None = SID) -> Record:
    now = time.time()
    return Record(
        tracking_id,
        expires_at=now + ttl,
        message_sid=sid,
        account_sid=ACCOUNT if sid else None,
        created_at=now,
    )


def _confirm(store: Store, tracking_id: str, *, lease: float = 60.0) -> tuple[bool, Record | None]:
    now = time.time()
    return store.confirm(tracking_id, now=now, lease_until=now + lease, keep_until=now + 7200)


class StoreConformance:
    """The contract of :class:`~twilio_feedback.stores.Store`, as tests."""

    @pytest.fixture
    def store(self) -> Any:
        """Override: yield a fresh, empty store."""
        raise NotImplementedError("provide a `store` fixture")

    def test_add_get_round_trip(self, store: Store) -> None:
        record = _record()
        store.add(record)
        got = store.get("t1")
        assert got is not None
        assert got.tracking_id == "t1"
        assert got.state is State.PENDING
        assert (got.message_sid, got.account_sid) == (SID, ACCOUNT)
        assert got.expires_at == pytest.approx(record.expires_at, abs=0.01)
        assert store.get("missing") is None

    def test_add_replaces(self, store: Store) -> None:
        store.add(_record())
        store.add(_record(sid="SM" + "ef" * 16))
        got = store.get("t1")
        assert got is not None
        assert got.message_sid == "SM" + "ef" * 16

    def test_confirm_once(self, store: Store) -> None:
        store.add(_record())
        won, record = _confirm(store, "t1")
        assert won
        assert record is not None
        assert record.state is State.CONFIRMED
        assert record.confirmed_at is not None
        assert record.expires_at >= time.time() + 7000
        again, record2 = _confirm(store, "t1")
        assert not again
        assert record2 is not None
        assert record2.state is State.CONFIRMED

    def test_confirm_unknown_and_expired(self, store: Store) -> None:
        assert _confirm(store, "nope") == (False, None)
        store.add(_record("old", ttl=0.5))
        now = time.time()
        won, _ = store.confirm("old", now=now + 1, lease_until=now + 60, keep_until=now + 60)
        assert not won

    def test_confirm_under_contention_has_one_winner(self, store: Store) -> None:
        store.add(_record())
        wins: list[bool] = []
        barrier = threading.Barrier(16)

        def attempt() -> None:
            barrier.wait()
            wins.append(_confirm(store, "t1")[0])

        threads = [threading.Thread(target=attempt) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert wins.count(True) == 1
        assert len(wins) == 16

    def test_attach_sid_after_confirm_enters_outbox(self, store: Store) -> None:
        store.add(_record(sid=None))
        won, record = _confirm(store, "t1", lease=-1)
        assert won
        assert record is not None
        assert record.message_sid is None
        now = time.time()
        assert store.claim(now=now, lease_until=now + 60, limit=10) == []
        attached = store.attach_sid("t1", SID, ACCOUNT)
        assert attached is not None
        assert attached.state is State.CONFIRMED
        assert attached.message_sid == SID
        claimed = store.claim(now=time.time(), lease_until=time.time() + 60, limit=10)
        assert [r.tracking_id for r in claimed] == ["t1"]
        assert store.attach_sid("missing", SID, ACCOUNT) is None

    def test_claim_respects_leases_and_limits(self, store: Store) -> None:
        for n in range(5):
            store.add(_record(f"t{n}"))
            _confirm(store, f"t{n}", lease=-1)  # lease already over
        store.add(_record("pending"))
        now = time.time()
        first = store.claim(now=now, lease_until=now + 60, limit=3)
        assert len(first) == 3
        assert all(r.lease_until == pytest.approx(now + 60, abs=0.01) for r in first)
        second = store.claim(now=now, lease_until=now + 60, limit=10)
        assert len(second) == 2
        assert {r.tracking_id for r in first + second} == {f"t{n}" for n in range(5)}
        assert store.claim(now=now, lease_until=now + 60, limit=10) == []
        later = store.claim(now=now + 61, lease_until=now + 120, limit=10)
        assert len(later) == 5

    def test_concurrent_claims_do_not_overlap(self, store: Store) -> None:
        for n in range(40):
            store.add(_record(f"t{n}"))
            _confirm(store, f"t{n}", lease=-1)
        taken: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def claim() -> None:
            barrier.wait()
            now = time.time()
            got = store.claim(now=now, lease_until=now + 60, limit=10)
            with lock:
                taken.extend(r.tracking_id for r in got)

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(taken) == sorted(set(taken))
        assert len(taken) == 40

    def test_outcomes(self, store: Store) -> None:
        for name in ("ok", "bad", "later"):
            store.add(_record(name))
            _confirm(store, name, lease=-1)
        store.mark_reported("ok")
        store.mark_failed("bad", code=20404, message="not found")
        now = time.time()
        store.defer("later", lease_until=now + 30, attempts=2, code=20503, message="down")
        ok, bad, later = (store.get(n) for n in ("ok", "bad", "later"))
        assert ok is not None
        assert ok.state is State.REPORTED
        assert bad is not None
        assert (bad.state, bad.error_code, bad.error_message) == (State.FAILED, 20404, "not found")
        assert later is not None
        assert (later.state, later.attempts, later.error_code) == (State.CONFIRMED, 2, 20503)
        assert store.claim(now=now, lease_until=now + 60, limit=10) == []
        assert [
            r.tracking_id for r in store.claim(now=now + 31, lease_until=now + 90, limit=10)
        ] == ["later"]
        counts = store.counts()
        assert (counts["reported"], counts["failed"], counts["confirmed"]) == (1, 1, 1)
        store.mark_reported("missing")  # no error, and nothing created
        assert store.get("missing") is None

    def test_delete(self, store: Store) -> None:
        store.add(_record())
        _confirm(store, "t1", lease=-1)
        store.delete("t1")
        assert store.get("t1") is None
        now = time.time()
        assert store.claim(now=now, lease_until=now + 60, limit=10) == []
        store.delete("t1")

    def test_expired_records_are_purged(self, store: Store) -> None:
        store.add(_record("short", ttl=0.2))
        store.add(_record("long"))
        purged = store.purge(now=time.time() + 1)
        assert store.get("long") is not None
        deadline = time.monotonic() + 5
        while store.get("short") is not None and time.monotonic() < deadline:
            store.purge(now=time.time() + 1)  # backends that expire by themselves
        assert store.get("short") is None
        assert purged >= 0
