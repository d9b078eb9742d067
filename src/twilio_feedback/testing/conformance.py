"""The Store conformance suite: every backend, yours included, passes the same tests.

Subclass :class:`StoreConformance` in your test suite and provide a ``store`` fixture
that yields a fresh, empty store, and a ``store_factory`` fixture that tells another
process how to open the same store::

    import pytest
    from twilio_feedback.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            store = MyStore(tmp_path / "records.db")
            yield store
            store.close()

        @pytest.fixture
        def store_factory(self, tmp_path):
            return functools.partial(MyStore, tmp_path / "records.db")

The tests cover every :class:`~twilio_feedback.stores.Store` method, expiry, exactly-once
confirmation under thread contention and across processes, claim leases (disjoint across
processes) and their renewal, outcomes that apply only to the record that was reported (a
key bound again meanwhile keeps its new record), re-binding, a confirmation that arrives
before the message SID, counts and purge; the operator commands of
:class:`~twilio_feedback.stores.AdminStore`, the health query of
:class:`~twilio_feedback.stores.HealthStore` and the conversion insights' counts of
:class:`~twilio_feedback.stores.InsightsStore` when the store has them, and the async twin
(``as_async()``, or the thread offload). Times are passed in, as the tracker does, except
where a backend's own expiry (a Redis TTL) is the subject.

The cross-process races run in :data:`RACE_PROCESSES` worker processes (started with the
``spawn`` method, once per test session, and reused by every race), each building its own
store from ``store_factory``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import multiprocessing
import pickle
import queue
import threading
import time
import traceback
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest

from ..insights import COUNTS, EPOCH, TTC_BUCKETS, Cell, day_number
from ..records import Record, State
from ..stores.base import (
    ERROR_MESSAGE_LENGTH,
    AdminStore,
    HealthStore,
    InsightsStore,
    Store,
    _resolve,
    as_async_store,
    store_from_url,
)

__all__ = ["RACE_PROCESSES", "RACE_RECORDS", "SharedStoreFactory", "StoreConformance"]

RACE_PROCESSES = 4
"""Processes that race ``confirm`` and ``claim`` against one shared store."""
RACE_RECORDS = 40
"""Records each cross-process race is about."""
RACE_TIMEOUT = 120.0

SharedStoreFactory = str | Callable[[], Store]
"""How a worker process opens the store under test: a URL for
:func:`~twilio_feedback.stores.store_from_url` (its scheme known to a fresh interpreter:
built in, or an entry point), ``"package.module:callable"`` called with no arguments, or a
picklable callable (a module-level function or class, or a ``functools.partial`` of one)."""

SID = "SM" + "ab" * 16
OTHER_SID = "SM" + "ef" * 16
ACCOUNT = "AC" + "cd" * 16
KEEP = 7200.0
SENDER = "+15005550006"
OTHER_SENDER = "MG" + "12" * 16
DAY = 86400.0


def _record(
    tracking_id: str = "t1",
    *,
    ttl: float = 3600.0,
    sid: str | None = SID,
    created_at: float | None = None,
    country: str | None = None,
    sender: str | None = None,
) -> Record:
    now = time.time()
    return Record(
        tracking_id,
        expires_at=now + ttl,
        message_sid=sid,
        account_sid=ACCOUNT if sid else None,
        created_at=now if created_at is None else created_at,
        country=country,
        sender=sender,
    )


def _confirm(store: Store, tracking_id: str, *, lease: float = 60.0) -> tuple[bool, Record | None]:
    now = time.time()
    return store.confirm(tracking_id, now=now, lease_until=now + lease, keep_until=now + KEEP)


def _claim_ids(store: Store, *, at: float | None = None, limit: int = 100) -> list[str]:
    now = time.time() if at is None else at
    return [r.tracking_id for r in store.claim(now=now, lease_until=now + 60, limit=limit)]


def _day(timestamp: float) -> date:
    return EPOCH + timedelta(days=day_number(timestamp))


Figures = dict[str, Any]


Key = tuple[date, str, str]


def _figures(store: InsightsStore, since: date, until: date) -> dict[Key, Figures]:
    """The store's cells from ``since`` to ``until`` by (day, country, sender), each as
    its counts by name and ``ttc`` (the histogram as a dict of bucket index -> count, zeros
    left out); cells whose counts are all zero are left out."""
    found: dict[Key, Figures] = {}
    for cell in store.insight_cells(since, until):
        assert isinstance(cell, Cell), f"insight_cells must return Cells, not {cell!r}"
        assert since <= cell.day <= until, f"insight_cells returned a cell of {cell.day}"
        assert len(cell.ttc) == len(TTC_BUCKETS), "a cell's ttc has one count per bucket"
        key = (cell.day, cell.country, cell.sender)
        assert key not in found, f"insight_cells returned two cells for {key}"
        figures: Figures = {name: getattr(cell, name) for name in COUNTS}
        figures["ttc"] = {index: count for index, count in enumerate(cell.ttc) if count}
        if any(figures[name] for name in COUNTS) or figures["ttc"]:
            found[key] = figures
    return found


def _counts(
    sent: int = 0, confirmed: int = 0, reported: int = 0, failed: int = 0, **ttc: int
) -> Figures:
    """Expected figures: ``ttc`` as ``b<index>=count``."""
    return {
        "sent": sent,
        "confirmed": confirmed,
        "reported": reported,
        "failed": failed,
        "ttc": {int(name[1:]): count for name, count in ttc.items()},
    }


def _expires_by_itself(store: Store) -> bool:
    return bool(getattr(store, "expires_by_itself", False))


def _in_threads(count: int, target: Callable[[int], None], timeout: float = 30.0) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout)
            target(index)
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "threads did not finish in time"
    if errors:
        raise errors[0]


def _open(factory: SharedStoreFactory) -> Store:
    if callable(factory):
        return factory()
    if "://" in factory:
        return store_from_url(factory)
    store: Store = _resolve(factory)()
    return store


def _race_confirm(store: Store, ids: list[str]) -> list[str]:
    won = []
    for tracking_id in ids:  # every process in the same order: the most contention
        now = time.time()
        if store.confirm(tracking_id, now=now, lease_until=now + 60, keep_until=now + KEEP)[0]:
            won.append(tracking_id)
    return won


def _race_claim(store: Store, limit: int, rounds: int) -> list[str]:
    taken: list[str] = []
    for _ in range(rounds):
        now = time.time()
        got = store.claim(now=now, lease_until=now + 600, limit=limit)
        if not got:
            break
        taken.extend(record.tracking_id for record in got)
    return taken


_RACES: dict[str, Callable[..., list[str]]] = {"confirm": _race_confirm, "claim": _race_claim}


def _race_worker(commands: Any, results: Any, barrier: Any) -> None:
    """A racing process: for each command, open the store, wait for the others, race."""
    while True:
        command = commands.get()
        if command is None:
            return
        race, factory, args = command
        store: Store | None = None
        error: str | None = None
        outcome: list[str] = []
        try:
            store = _open(factory)
            store.get("warm-up")  # connect (and create tables) before the race, not in it
        except BaseException:
            error = traceback.format_exc()
        try:
            barrier.wait(RACE_TIMEOUT)
        except threading.BrokenBarrierError:
            error = error or "another racing process never reached the start"
        if error is None and store is not None:
            try:
                outcome = _RACES[race](store, **args)
            except BaseException:
                error = traceback.format_exc()
        if store is not None:
            with contextlib.suppress(Exception):  # the race's result matters, not the close
                store.close()
        results.put((error, outcome))


class _RacePool:
    """:data:`RACE_PROCESSES` spawned worker processes, started once, reused by races."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.barrier = context.Barrier(RACE_PROCESSES)
        self.results = context.Queue()
        self.commands = [context.Queue() for _ in range(RACE_PROCESSES)]
        self.processes = [
            context.Process(
                target=_race_worker,
                args=(commands, self.results, self.barrier),
                name=f"twilio-feedback-race-{n}",
                daemon=True,
            )
            for n, commands in enumerate(self.commands)
        ]
        for process in self.processes:
            process.start()

    def race(self, race: str, factory: SharedStoreFactory, **args: Any) -> list[list[str]]:
        for commands in self.commands:
            commands.put((race, factory, args))
        outcomes: list[list[str]] = []
        deadline = time.monotonic() + RACE_TIMEOUT + 30
        for _ in self.processes:
            try:
                error, outcome = self.results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"the racing processes did not finish the {race} race") from None
            if error is not None:
                raise RuntimeError(f"a racing process failed to {race}:\n{error}")
            outcomes.append(outcome)
        return outcomes

    def close(self) -> None:
        for commands in self.commands:
            commands.put(None)
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.terminate()


_pool: _RacePool | None = None
_pool_lock = threading.Lock()


def _race(race: str, factory: SharedStoreFactory, **args: Any) -> list[list[str]]:
    """Run ``race`` in every worker process at once; their outcomes."""
    global _pool
    try:
        pickle.dumps(factory)
    except Exception as exc:
        raise TypeError(
            "store_factory must be a URL, 'package.module:callable', or a picklable "
            f"callable (a module-level function or class, or functools.partial of one): {exc}"
        ) from None
    with _pool_lock:
        if _pool is None:
            _pool = _RacePool()
            atexit.register(_pool.close)
        pool = _pool
        try:
            return pool.race(race, factory, **args)
        except BaseException:
            _pool = None  # a worker may be stuck or gone: the next race starts afresh
            atexit.unregister(pool.close)
            pool.close()
            raise


def _shared(store: Store, factory: SharedStoreFactory | None) -> SharedStoreFactory:
    if factory is None:
        pytest.skip("the store lives in one process (store_factory is None): no process race")
    return factory


class StoreConformance:
    """The contract of :class:`~twilio_feedback.stores.Store`, as tests."""

    @pytest.fixture
    def store(self) -> Any:
        """Override: yield a fresh, empty store."""
        raise NotImplementedError("provide a `store` fixture that yields a fresh, empty store")

    @pytest.fixture
    def store_factory(self, store: Any) -> SharedStoreFactory | None:
        """Override: how another process opens the store ``store`` is (its records, its
        table, its key prefix): a :data:`SharedStoreFactory`.

        Return ``None`` for a store that lives in one process; without an override that is
        the default for a store whose class says ``shared = False``, and any other store
        fails here: a store that processes share must be raced by processes.
        """
        if not getattr(store, "shared", True):
            return None
        pytest.fail(
            f"{type(store).__name__}: give StoreConformance a store_factory fixture (a URL, "
            "'package.module:callable' or a picklable callable that opens the same store in "
            "another process), so that it can race processes; or, for a store that lives "
            "in one process, set shared = False on its class"
        )

    # -- add, get, delete --------------------------------------------------------------

    def test_add_get_round_trip(self, store: Store) -> None:
        record = _record()
        store.add(record)
        got = store.get("t1")
        assert got is not None
        assert got.tracking_id == "t1"
        assert got.state is State.PENDING
        assert (got.message_sid, got.account_sid) == (SID, ACCOUNT)
        assert got.expires_at == pytest.approx(record.expires_at, abs=0.01)
        assert got.created_at == pytest.approx(record.created_at, abs=0.01)
        assert got.confirmed_at is None
        assert (got.attempts, got.error_code, got.error_message) == (0, None, None)
        assert store.get("missing") is None

    def test_every_field_survives(self, store: Store) -> None:
        now = time.time()
        record = Record(
            "full",
            expires_at=now + 3600,
            state=State.CONFIRMED,
            message_sid=SID,
            account_sid=ACCOUNT,
            created_at=now - 10,
            confirmed_at=now - 5,
            lease_until=now + 30,
            attempts=3,
            error_code=20429,
            error_message="Too Many Requests",
        )
        store.add(record)
        got = store.get("full")
        assert got is not None
        for name in ("expires_at", "created_at", "confirmed_at", "lease_until"):
            assert getattr(got, name) == pytest.approx(getattr(record, name), abs=0.01), name
        assert (
            got.replace(
                expires_at=record.expires_at,
                created_at=record.created_at,
                confirmed_at=record.confirmed_at,
                lease_until=record.lease_until,
            )
            == record
        )

    def test_error_messages_are_cut_to_error_message_length(self, store: Store) -> None:
        rule = f"a store keeps an error message's first {ERROR_MESSAGE_LENGTH} characters"
        long = "é" + "x" * (ERROR_MESSAGE_LENGTH - 2) + "€" + "y" * 1500  # not bytes: characters
        for name in ("failed", "deferred", "exact"):
            store.add(_record(name))
            _confirm(store, name, lease=-1)
        now = time.time()
        store.mark_failed("failed", SID, code=21610, message=long)
        store.defer("deferred", SID, lease_until=now, attempts=1, code=None, message=long)
        store.mark_failed("exact", SID, code=1, message=long[:ERROR_MESSAGE_LENGTH])
        store.add(_record("added").replace(error_code=20003, error_message=long))
        for name, method in (
            ("failed", "mark_failed"),
            ("deferred", "defer"),
            ("exact", "mark_failed"),
            ("added", "add"),
        ):
            got = store.get(name)
            assert got is not None
            assert got.error_message == long[:ERROR_MESSAGE_LENGTH], (
                f"{rule} ({method}: error_message kept {len(got.error_message or '')} characters)"
            )

    def test_add_replaces(self, store: Store) -> None:
        store.add(_record())
        store.add(_record(sid=OTHER_SID))
        got = store.get("t1")
        assert got is not None
        assert got.message_sid == OTHER_SID

    def test_rebind_replaces_a_confirmed_record(self, store: Store) -> None:
        store.add(_record())
        assert _confirm(store, "t1", lease=-1)[0]
        store.add(_record(sid=OTHER_SID))  # the same key bound to a resent code
        got = store.get("t1")
        assert got is not None
        assert (got.state, got.message_sid) == (State.PENDING, OTHER_SID)
        assert _claim_ids(store) == []
        won, record = _confirm(store, "t1", lease=-1)
        assert won
        assert record is not None
        assert record.message_sid == OTHER_SID

    def test_add_confirmed_record_enters_outbox(self, store: Store) -> None:
        now = time.time()
        store.add(Record("c", expires_at=now + 600, state=State.CONFIRMED, message_sid=SID))
        assert _claim_ids(store) == ["c"]

    def test_delete(self, store: Store) -> None:
        store.add(_record())
        _confirm(store, "t1", lease=-1)
        store.delete("t1")
        assert store.get("t1") is None
        assert _claim_ids(store) == []
        store.delete("t1")  # deleting what is gone is no error

    # -- confirm -------------------------------------------------------------------------

    def test_confirm_once(self, store: Store) -> None:
        store.add(_record())
        now = time.time()
        won, record = store.confirm("t1", now=now, lease_until=now + 60, keep_until=now + KEEP)
        assert won, "confirm must win a live pending record"
        assert record is not None, "a winning confirm must return the record"
        assert record.state is State.CONFIRMED, "confirm must set state to confirmed"
        assert record.confirmed_at == pytest.approx(now, abs=0.01), "confirm sets confirmed_at=now"
        assert record.lease_until == pytest.approx(now + 60, abs=0.01), (
            "confirm must set lease_until as given"
        )
        assert record.expires_at == pytest.approx(now + KEEP, abs=0.01), (
            "confirm must set expires_at=max(expires_at, keep_until)"
        )
        again, record2 = _confirm(store, "t1")
        assert not again, "a second confirm of one record must lose"
        assert record2 is not None, "a losing confirm must return the record it found"
        assert record2.state is State.CONFIRMED
        assert record2.confirmed_at == pytest.approx(now, abs=0.01), (
            "a losing confirm must change nothing (confirmed_at)"
        )

    def test_confirm_keeps_a_later_expiry(self, store: Store) -> None:
        store.add(_record(ttl=KEEP * 3))
        won, record = _confirm(store, "t1")
        assert won
        assert record is not None
        assert record.expires_at >= time.time() + KEEP * 2

    def test_confirm_unknown(self, store: Store) -> None:
        assert _confirm(store, "nope") == (False, None)

    def test_confirm_expired_changes_nothing(self, store: Store) -> None:
        store.add(_record("old", ttl=30))
        now = time.time()
        # The caller's clock decides: 60 s from now the record has expired.
        won, record = store.confirm("old", now=now + 60, lease_until=now + 120, keep_until=now)
        assert not won
        assert record is None or record.state is State.PENDING
        got = store.get("old")
        assert got is not None
        assert got.state is State.PENDING

    def test_confirm_leaves_other_states_alone(self, store: Store) -> None:
        for name in ("reported", "failed"):
            store.add(_record(name))
            _confirm(store, name, lease=-1)
        store.mark_reported("reported", SID)
        store.mark_failed("failed", SID, code=21610, message="unsubscribed")
        for name, state in (("reported", State.REPORTED), ("failed", State.FAILED)):
            won, record = _confirm(store, name)
            assert not won
            assert record is not None
            assert record.state is state

    def test_confirm_under_contention_has_one_winner(self, store: Store) -> None:
        # Several records raced in turn: a loser racing the winner's commit is rare on one.
        ids = [f"c{n}" for n in range(8)]
        for tracking_id in ids:
            store.add(_record(tracking_id))
        results: list[tuple[str, bool, Record | None]] = []
        lock = threading.Lock()

        def attempt(_: int) -> None:
            mine = [(tracking_id, *_confirm(store, tracking_id)) for tracking_id in ids]
            with lock:
                results.extend(mine)

        _in_threads(16, attempt)
        assert len(results) == 16 * len(ids)
        for tracking_id in ids:
            wins = [won for name, won, _ in results if name == tracking_id]
            assert wins.count(True) == 1, (
                f"confirm must let exactly one of 16 threads win a record, not {wins.count(True)}"
            )
        # A loser is told why it lost: the record as the winner left it, even when it raced
        # the winner's commit (a statement's snapshot from before it would say pending).
        stale = [
            (name, None if record is None else record.state)
            for name, won, record in results
            if not won and (record is None or record.state is not State.CONFIRMED)
        ]
        assert not stale, f"a losing confirm must return the confirmed record, got {stale[:5]}"

    def test_many_tokens_many_threads_each_confirmed_once(self, store: Store) -> None:
        ids = [f"m{n}" for n in range(50)]
        for tracking_id in ids:
            store.add(_record(tracking_id))
        won: list[str] = []
        lock = threading.Lock()

        def attempt(index: int) -> None:
            order = ids[index:] + ids[:index]  # threads start on different tokens
            mine = [tracking_id for tracking_id in order if _confirm(store, tracking_id)[0]]
            with lock:
                won.extend(mine)

        _in_threads(8, attempt)
        assert sorted(won) == sorted(ids), (
            "confirm must let exactly one thread win each record: "
            f"won {len(won)} times for {len(ids)} records"
        )
        assert store.counts()["confirmed"] == len(ids)

    def test_processes_race_confirm(
        self, store: Store, store_factory: SharedStoreFactory | None
    ) -> None:
        factory = _shared(store, store_factory)
        ids = [f"race{n}" for n in range(RACE_RECORDS)]
        created_at = time.time() - 5
        for tracking_id in ids:
            store.add(_record(tracking_id, created_at=created_at, country="US", sender=SENDER))
        won = [
            tracking_id for outcome in _race("confirm", factory, ids=ids) for tracking_id in outcome
        ]
        twice = sorted({tracking_id for tracking_id in won if won.count(tracking_id) > 1})
        assert not twice, (
            f"confirm must let exactly one process win each record: {RACE_PROCESSES} "
            f"processes won {len(won)} times for {len(ids)} records; won more than once: "
            f"{twice[:5]} (a lock inside one process is not enough for a shared store)"
        )
        missing = sorted(set(ids) - set(won))
        assert not missing, (
            f"confirm must let exactly one process win each record; no process won {missing[:5]}"
        )
        assert store.counts()["confirmed"] == len(ids), (
            "every record confirmed by another process must be confirmed here too"
        )
        if isinstance(store, InsightsStore):
            day = _day(created_at)
            confirmed = _figures(store, day, day)[(day, "US", SENDER)]["confirmed"]
            assert confirmed == len(ids), (
                f"insights must count each confirmation once, whichever process won it: "
                f"{confirmed} counted for {len(ids)} records"
            )

    def test_processes_race_claim(
        self, store: Store, store_factory: SharedStoreFactory | None
    ) -> None:
        factory = _shared(store, store_factory)
        ids = [f"due{n}" for n in range(RACE_RECORDS)]
        now = time.time()
        for tracking_id in ids:
            store.add(
                Record(
                    tracking_id,
                    expires_at=now + 3600,
                    state=State.CONFIRMED,
                    message_sid=SID,
                    account_sid=ACCOUNT,
                    created_at=now,
                    confirmed_at=now,
                )
            )
        outcomes = _race("claim", factory, limit=5, rounds=2 * RACE_RECORDS)
        taken = [tracking_id for outcome in outcomes for tracking_id in outcome]
        twice = sorted({tracking_id for tracking_id in taken if taken.count(tracking_id) > 1})
        assert not twice, (
            "claim must never hand one record to two processes whose leases overlap: "
            f"claimed more than once: {twice[:5]}"
        )
        assert sorted(taken) == sorted(ids), (
            "claim must hand out every due record to some process; never claimed: "
            f"{sorted(set(ids) - set(taken))[:5]}"
        )

    # -- the race between send() and a click ----------------------------------------------

    def test_attach_sid_after_confirm_enters_outbox(self, store: Store) -> None:
        store.add(_record(sid=None))
        won, record = _confirm(store, "t1", lease=-1)
        assert won
        assert record is not None
        assert record.message_sid is None
        assert _claim_ids(store) == []  # nothing to report until the SID is known
        attached = store.attach_sid("t1", SID, ACCOUNT)
        assert attached is not None
        assert attached.state is State.CONFIRMED
        assert (attached.message_sid, attached.account_sid) == (SID, ACCOUNT)
        assert _claim_ids(store) == ["t1"]

    def test_attach_sid_before_confirm(self, store: Store) -> None:
        store.add(_record(sid=None))
        attached = store.attach_sid("t1", SID, ACCOUNT)
        assert attached is not None
        assert attached.state is State.PENDING
        assert _claim_ids(store) == []
        assert _confirm(store, "t1", lease=-1)[0]
        assert _claim_ids(store) == ["t1"]

    def test_attach_sid_to_missing_record(self, store: Store) -> None:
        assert store.attach_sid("missing", SID, ACCOUNT) is None
        assert store.get("missing") is None

    def test_attach_sid_without_account(self, store: Store) -> None:
        # None: the settings' own account (the tracker's readers fall back to it).
        store.add(_record())
        attached = store.attach_sid("t1", SID, None)
        assert attached is not None
        assert (attached.message_sid, attached.account_sid) == (SID, None)
        got = store.get("t1")
        assert got is not None
        assert (got.message_sid, got.account_sid) == (SID, None)
        assert _confirm(store, "t1", lease=-1)[0]
        assert _claim_ids(store) == ["t1"]

    # -- claim and the reporter's outcomes --------------------------------------------------

    def test_claim_respects_leases_and_limits(self, store: Store) -> None:
        for n in range(5):
            store.add(_record(f"t{n}"))
            _confirm(store, f"t{n}", lease=-1)  # lease already over
        store.add(_record("pending"))
        now = time.time()
        first = store.claim(now=now, lease_until=now + 60, limit=3)
        assert len(first) == 3
        assert all(r.lease_until == pytest.approx(now + 60, abs=0.01) for r in first)
        assert all(r.state is State.CONFIRMED and r.message_sid == SID for r in first)
        second = store.claim(now=now, lease_until=now + 60, limit=10)
        assert len(second) == 2
        assert {r.tracking_id for r in first + second} == {f"t{n}" for n in range(5)}
        assert store.claim(now=now, lease_until=now + 60, limit=10) == []
        later = store.claim(now=now + 61, lease_until=now + 120, limit=10)
        assert len(later) == 5

    def test_a_fresh_confirmation_is_leased_to_its_confirmer(self, store: Store) -> None:
        store.add(_record())
        _confirm(store, "t1", lease=60)
        now = time.time()
        assert _claim_ids(store, at=now) == []
        assert _claim_ids(store, at=now + 61) == ["t1"]

    def test_concurrent_claims_do_not_overlap(self, store: Store) -> None:
        for n in range(40):
            store.add(_record(f"t{n}"))
            _confirm(store, f"t{n}", lease=-1)
        taken: list[str] = []
        lock = threading.Lock()

        def claim(_: int) -> None:
            now = time.time()
            got = store.claim(now=now, lease_until=now + 60, limit=10)
            with lock:
                taken.extend(r.tracking_id for r in got)

        _in_threads(8, claim)
        assert sorted(taken) == sorted(set(taken)), (
            "claim must never hand one record to two callers whose leases overlap"
        )
        assert len(taken) == 40, f"claim must hand out every due record (40, not {len(taken)})"

    def test_outcomes(self, store: Store) -> None:
        for name in ("ok", "bad", "later"):
            store.add(_record(name))
            _confirm(store, name, lease=-1)
        assert store.mark_reported("ok", SID), "mark_reported must return True when it applies"
        assert store.mark_failed("bad", SID, code=20404, message="not found"), (
            "mark_failed must return True when it applies"
        )
        now = time.time()
        assert store.defer(
            "later", SID, lease_until=now + 30, attempts=2, code=20503, message="down"
        ), "defer must return True when it applies"
        ok, bad, later = (store.get(n) for n in ("ok", "bad", "later"))
        assert ok is not None
        assert (ok.state, ok.lease_until) == (State.REPORTED, 0.0)
        assert bad is not None
        assert (bad.state, bad.error_code, bad.error_message) == (State.FAILED, 20404, "not found")
        assert later is not None
        assert (later.state, later.attempts, later.error_code) == (State.CONFIRMED, 2, 20503)
        assert later.error_message == "down"
        assert store.claim(now=now, lease_until=now + 60, limit=10) == []
        assert _claim_ids(store, at=now + 31) == ["later"]
        counts = store.counts()
        assert (counts["reported"], counts["failed"], counts["confirmed"]) == (1, 1, 1)

    def test_outcomes_for_missing_records_create_nothing(self, store: Store) -> None:
        now = time.time()
        assert not store.mark_reported("missing", SID), (
            "mark_reported for no record must return False"
        )
        assert not store.mark_failed("missing", SID, code=None, message=None), (
            "mark_failed for no record must return False"
        )
        assert not store.defer(
            "missing", SID, lease_until=now, attempts=1, code=None, message=None
        ), "defer for no record must return False"
        assert store.renew([("missing", SID)], lease_until=now + 60) == 0, (
            "renew must not count a record that does not exist"
        )
        assert store.get("missing") is None, "an outcome update must never create a record"
        assert sum(store.counts().values()) == 0, "an outcome update must never create a record"
        assert _claim_ids(store, at=now + 120) == [], "an outcome update created an outbox entry"

    def test_outcomes_apply_only_to_the_record_that_was_reported(self, store: Store) -> None:
        # A key bound again to a resent code while the first code's report is in flight:
        # the first report's outcome names its own message and must leave the new record be.
        store.add(_record())
        assert _confirm(store, "t1", lease=-1)[0]
        store.add(_record(sid=OTHER_SID))
        now = time.time()
        stale: dict[str, Callable[[], bool]] = {
            "mark_reported": lambda: store.mark_reported("t1", SID),
            "mark_failed": lambda: store.mark_failed("t1", SID, code=20404, message="gone"),
            "defer": lambda: store.defer(
                "t1", SID, lease_until=now + 600, attempts=3, code=20503, message="down"
            ),
        }
        for confirmed_again in (False, True):
            if confirmed_again:
                assert _confirm(store, "t1", lease=-1)[0], "the re-bound key must confirm"
            for name, update in stale.items():
                assert not update(), (
                    f"{name} for another message SID must return False (it did not apply)"
                )
                got = store.get("t1")
                assert got is not None
                state = State.CONFIRMED if confirmed_again else State.PENDING
                assert (got.state, got.message_sid) == (state, OTHER_SID), (
                    f"{name} must apply only to the record with the message SID it names"
                )
                assert (got.attempts, got.error_code, got.error_message) == (0, None, None), (
                    f"{name} for another message SID changed the record's error fields"
                )
            assert store.renew([("t1", SID)], lease_until=now + 600) == 0, (
                "renew must only count records confirmed with the message SID it names"
            )
        assert _claim_ids(store, at=now + 1) == ["t1"], (
            "a stale defer or renew must not move the new record's lease"
        )
        assert store.mark_reported("t1", OTHER_SID), "the outcome of the new message applies"
        got = store.get("t1")
        assert got is not None
        assert got.state is State.REPORTED

    def test_outcomes_apply_only_to_confirmed_records(self, store: Store) -> None:
        store.add(_record("pending"))
        for name in ("reported", "failed"):
            store.add(_record(name))
            _confirm(store, name, lease=-1)
        store.mark_reported("reported", SID)
        store.mark_failed("failed", SID, code=21610, message="unsubscribed")
        now = time.time()
        for name, state in (
            ("pending", State.PENDING),
            ("reported", State.REPORTED),
            ("failed", State.FAILED),
        ):
            rule = f"an outcome update must not apply to a {state.value} record"
            assert not store.mark_reported(name, SID), f"{rule} (mark_reported)"
            assert not store.mark_failed(name, SID, code=20001, message="late"), (
                f"{rule} (mark_failed)"
            )
            assert not store.defer(
                name, SID, lease_until=now + 30, attempts=5, code=20503, message="down"
            ), f"{rule} (defer)"
            assert store.renew([(name, SID)], lease_until=now + 30) == 0, (
                f"renew must not count a {state.value} record"
            )
            got = store.get(name)
            assert got is not None
            assert got.state is state, (
                f"an outcome update must apply only to a confirmed record, not a {state.value} one"
            )
            assert got.attempts == 0, f"defer must not apply to a {state.value} record"
        assert _claim_ids(store, at=now + 60) == [], "an outcome update re-opened a record"

    def test_renew_extends_the_leases_of_held_records(self, store: Store) -> None:
        for name in ("a", "b", "c"):
            store.add(_record(name))
            _confirm(store, name, lease=10)
        now = time.time()
        held = [("a", SID), ("b", SID), ("c", OTHER_SID), ("gone", SID)]
        assert store.renew(held, lease_until=now + 60) == 2, (
            "renew must return how many of the named records are still held"
        )
        assert store.renew([], lease_until=now + 60) == 0
        for name, lease in (("a", now + 60), ("b", now + 60), ("c", now + 10)):
            got = store.get(name)
            assert got is not None
            assert got.lease_until == pytest.approx(lease, abs=0.5), (
                f"renew must set the lease of records held with their message SID ({name})"
            )
        assert _claim_ids(store, at=now + 30) == ["c"], (
            "a renewed record must not be claimed before its new lease ends"
        )
        assert sorted(_claim_ids(store, at=now + 61)) == ["a", "b"], (
            "a renewed record must be claimable once its new lease ends"
        )

    def test_renew_never_shortens_a_lease(self, store: Store) -> None:
        store.add(_record())
        _confirm(store, "t1", lease=-1)
        now = time.time()
        # A retry released to the store, due later than the heartbeat would renew it.
        store.defer("t1", SID, lease_until=now + 600, attempts=1, code=20429, message="slow")
        assert store.renew([("t1", SID)], lease_until=now + 15) == 1, (
            "renew must count a held record whose lease already runs later"
        )
        got = store.get("t1")
        assert got is not None
        assert got.lease_until == pytest.approx(now + 600, abs=0.5), (
            "renew must never shorten a lease"
        )
        assert _claim_ids(store, at=now + 16) == [], "renew shortened a lease"

    def test_defer_sets_the_lease_exactly(self, store: Store) -> None:
        store.add(_record())
        _confirm(store, "t1", lease=600)
        now = time.time()
        assert store.defer("t1", SID, lease_until=now + 5, attempts=1, code=None, message=None)
        assert _claim_ids(store, at=now + 6) == ["t1"], (
            "defer must set lease_until as given, even when that shortens the lease"
        )

    def test_renew_many_records_at_once(self, store: Store) -> None:
        now = time.time()
        ids = [f"r{n}" for n in range(1200)]
        for tracking_id in ids:
            store.add(Record(tracking_id, expires_at=now + 600, message_sid=SID))
        for tracking_id in ids:
            _confirm(store, tracking_id, lease=-1)
        held = [(tracking_id, SID) for tracking_id in ids]
        assert store.renew(held, lease_until=now + 60) == len(ids), (
            "renew must renew every pair it is given, however many"
        )
        assert _claim_ids(store, at=now + 30) == [], "a record was left out of the renewal"

    # -- counts and expiry -----------------------------------------------------------------

    def test_counts(self, store: Store) -> None:
        assert store.counts() == {"pending": 0, "confirmed": 0, "reported": 0, "failed": 0}
        for n in range(3):
            store.add(_record(f"p{n}"))
        store.add(_record("c"))
        _confirm(store, "c")
        assert store.counts() == {"pending": 3, "confirmed": 1, "reported": 0, "failed": 0}

    def test_purge_returns_how_many_it_removed(self, store: Store) -> None:
        base = time.time()
        now = base + 20  # every record is live by the wall clock: only purge's now decides
        for name, expires_at in (
            ("before", base + 10),
            ("long-before", base + 5),
            ("edge", now),
            ("after", now + 10),
        ):
            store.add(Record(name, expires_at=expires_at, message_sid=SID, created_at=base))
        before = sum(store.counts().values())
        removed = store.purge(now=now)
        after = sum(store.counts().values())
        assert removed == before - after, (
            f"purge must return how many records it removed: it returned {removed}, "
            f"and {before - after} records are gone"
        )
        assert store.get("after") is not None, (
            "purge must keep a record whose expires_at is after now"
        )
        if _expires_by_itself(store):
            return  # its backend deletes expired records, on its own clock
        for name in ("before", "long-before", "edge"):
            assert store.get(name) is None, (
                f"purge must delete a record whose expires_at is at or before now ({name!r}"
                + (", expires_at == now" if name == "edge" else "")
                + ")"
            )
        assert removed == 3, f"purge must return how many records it removed (3, not {removed})"
        assert store.purge(now=now) == 0, "a second purge at the same now removes nothing"

    def test_the_expiry_boundary(self, store: Store) -> None:
        store.add(_record("edge", ttl=60))
        expires_at = store.get("edge").expires_at  # type: ignore[union-attr]
        won, record = store.confirm(
            "edge", now=expires_at, lease_until=expires_at + 60, keep_until=expires_at + KEEP
        )
        assert not won, "confirm must refuse a record whose expires_at equals now (expired)"
        assert record is None or record.state is State.PENDING, (
            "a refused confirm must leave the record's state pending"
        )
        won, _ = store.confirm(
            "edge", now=expires_at - 0.001, lease_until=expires_at, keep_until=expires_at + KEEP
        )
        assert won, "confirm must accept a record whose expires_at is after now"

    def test_get_reads_no_clock(self, store: Store) -> None:
        if _expires_by_itself(store):
            pytest.skip("the store expires records by itself, on its own clock")
        past = time.time() - 60
        store.add(Record("past", expires_at=past, message_sid=SID, created_at=past - 60))
        got = store.get("past")
        assert got is not None, (
            "get must read no clock: a record past its expires_at is returned until purge "
            "deletes it"
        )
        assert got.expires_at == pytest.approx(past, abs=0.01), "get changed expires_at"
        won, _ = store.confirm("past", now=past - 30, lease_until=past, keep_until=past + 1)
        assert won, (
            "confirm must decide expiry by the now it is given (expires_at > now), not by a "
            "clock of its own"
        )

    def test_expired_records_are_purged(self, store: Store) -> None:
        store.add(_record("short", ttl=0.2))
        store.add(_record("long"))
        store.add(_record("kept", ttl=0.2))
        assert _confirm(store, "kept")[0]  # the outbox outlives the link
        purged = store.purge(now=time.time() + 1)
        assert purged >= 0
        assert store.get("long") is not None
        assert store.get("kept") is not None
        deadline = time.monotonic() + 5
        while store.get("short") is not None and time.monotonic() < deadline:
            time.sleep(0.05)  # backends that expire records by themselves, on their clock
            store.purge(now=time.time() + 1)
        assert store.get("short") is None
        assert store.counts()["pending"] == 1

    # -- operator commands -----------------------------------------------------------------

    def _admin(self, store: Store) -> AdminStore:
        if not isinstance(store, AdminStore):
            pytest.skip("the store has no operator commands (AdminStore)")
        return store

    def test_list_records(self, store: Store) -> None:
        admin = self._admin(store)
        now = time.time()
        for n in range(4):
            store.add(Record(f"f{n}", expires_at=now + 600, message_sid=SID, created_at=now + n))
            _confirm(store, f"f{n}", lease=-1)
            store.mark_failed(f"f{n}", SID, code=21610, message="unsubscribed")
        store.add(_record("p"))
        failed = admin.list_records(State.FAILED, limit=3)
        assert [r.tracking_id for r in failed] == ["f3", "f2", "f1"]
        assert all(r.error_code == 21610 for r in failed)
        assert [r.tracking_id for r in admin.list_records(State.PENDING, limit=10)] == ["p"]
        assert admin.list_records(State.REPORTED, limit=10) == []

    def test_requeue_failed(self, store: Store) -> None:
        admin = self._admin(store)
        for name in ("f1", "f2", "ok"):
            store.add(_record(name, ttl=60))
            _confirm(store, name, lease=-1)
        store.mark_failed("f1", SID, code=20003, message="auth")
        store.mark_failed("f2", SID, code=None, message="retry window over")
        store.mark_reported("ok", SID)
        now = time.time()
        assert admin.requeue_failed(now=now, keep_until=now + KEEP * 2) == 2
        assert admin.requeue_failed(now=now, keep_until=now + KEEP * 2) == 0
        for name in ("f1", "f2"):
            record = store.get(name)
            assert record is not None
            assert record.state is State.CONFIRMED
            assert (record.attempts, record.error_code, record.error_message) == (0, None, None)
            assert record.confirmed_at == pytest.approx(now, abs=0.01)
            assert record.expires_at >= now + KEEP * 2 - 1
        assert sorted(_claim_ids(store)) == ["f1", "f2"]
        assert store.counts() == {"pending": 0, "confirmed": 2, "reported": 1, "failed": 0}

    # -- health ----------------------------------------------------------------------------

    def test_oldest_unreported(self, store: Store) -> None:
        if not isinstance(store, HealthStore):
            pytest.skip("the store has no health query (HealthStore)")
        assert store.oldest_unreported() is None
        now = time.time()

        def confirmed(name: str, at: float, *, sid: str | None = SID, lease: float = 60) -> None:
            store.add(_record(name, sid=sid))
            won, _ = store.confirm(name, now=at, lease_until=at + lease, keep_until=now + KEEP)
            assert won

        store.add(_record("pending"))
        confirmed("no-sid", now - 500, sid=None)  # nobody can report it yet: not counted
        confirmed("reported", now - 400)
        store.mark_reported("reported", SID)
        confirmed("failed", now - 300)
        store.mark_failed("failed", SID, code=20404, message="not found")
        confirmed("held", now - 200)  # under a lease: still unreported
        confirmed("due", now - 100, lease=-1)
        assert store.oldest_unreported() == pytest.approx(now - 200, abs=0.01)
        store.mark_reported("held", SID)
        assert store.oldest_unreported() == pytest.approx(now - 100, abs=0.01)
        store.mark_failed("due", SID, code=None, message="retry window over")
        assert store.oldest_unreported() is None

    # -- conversion insights ---------------------------------------------------------------

    def _insights(self, store: Store) -> InsightsStore:
        if not isinstance(store, InsightsStore):
            pytest.skip("the store keeps no conversion insights (InsightsStore)")
        return store

    def test_insights_keep_country_and_sender(self, store: Store) -> None:
        self._insights(store)
        store.add(_record("a", sid=None, country="FR", sender=OTHER_SENDER))
        got = store.get("a")
        assert got is not None
        assert (got.country, got.sender) == ("FR", OTHER_SENDER), (
            "an InsightsStore keeps a record's country and sender"
        )
        attached = store.attach_sid("a", SID, ACCOUNT)
        assert attached is not None
        assert (attached.country, attached.sender) == ("FR", OTHER_SENDER)
        won, record = _confirm(store, "a")
        assert won
        assert record is not None
        assert (record.country, record.sender) == ("FR", OTHER_SENDER), (
            "confirm returns the record with its country (the confirmation metric's attribute)"
        )
        store.add(_record("b"))
        got = store.get("b")
        assert got is not None
        assert (got.country, got.sender) == (None, None)

    def test_insights_count_sends_by_day_country_and_sender(self, store: Store) -> None:
        insights = self._insights(store)
        today_at = day_number(time.time()) * DAY  # midnight, UTC
        today, yesterday = _day(today_at), _day(today_at - DAY)
        for name, created_at, country, sender in (
            ("us1", today_at + 10, "US", SENDER),
            ("us2", today_at, "US", SENDER),  # midnight: the day that starts
            ("us3", today_at - 0.001, "US", SENDER),  # the day before
            ("fr", today_at + 20, "FR", OTHER_SENDER),
            ("xx", today_at + 30, "XX", None),
            ("off", today_at + 40, None, None),  # insights off: counted nowhere
        ):
            store.add(_record(name, created_at=created_at, country=country, sender=sender))
        store.add(_record("us1", created_at=today_at + 50, country="US", sender=SENDER))
        assert _figures(insights, yesterday, today) == {
            (today, "US", SENDER): _counts(sent=3),
            (yesterday, "US", SENDER): _counts(sent=1),
            (today, "FR", OTHER_SENDER): _counts(sent=1),
            (today, "XX", "unknown"): _counts(sent=1),
        }, (
            "add counts one sent message per record (again when added again), in the UTC day "
            "of its created_at, its country and sender ('unknown' when None); a record "
            "without a country counts nowhere"
        )
        assert set(_figures(insights, today, today)) == {
            (today, "US", SENDER),
            (today, "FR", OTHER_SENDER),
            (today, "XX", "unknown"),
        }, "insight_cells returns the days from since to until, both included"
        assert _figures(insights, yesterday - timedelta(days=9), yesterday) == {
            (yesterday, "US", SENDER): _counts(sent=1)
        }
        assert _figures(insights, today + timedelta(days=1), today + timedelta(days=5)) == {}

    def test_insights_count_a_winning_confirm_in_its_ttc_bucket(self, store: Store) -> None:
        insights = self._insights(store)
        sent_at = day_number(time.time()) * DAY - 2 * DAY + 3600  # two days ago, 01:00
        # TTC_BUCKETS: <= 10 s (0), 30 s (1), ..., 1 h (7), 6 h (8), 24 h (9), longer (10)
        delays = {"d5": 5.0, "d10": 10.0, "d10.5": 10.5, "d2h": 7200.0, "d2d": 2 * DAY, "skew": -3}
        for name in (*delays, "dup", "late", "off"):
            country = None if name == "off" else "US"
            ttl = 60.0 if name == "late" else 3 * DAY
            store.add(_record(name, created_at=sent_at, ttl=ttl, country=country, sender=SENDER))
        for name, delay in delays.items():
            now = sent_at + delay
            won, _ = store.confirm(name, now=now, lease_until=now + 60, keep_until=now + KEEP)
            assert won, name
        now = time.time()
        assert _confirm(store, "dup")[0]
        assert not _confirm(store, "dup")[0]  # a duplicate: counted once
        late = store.get("late")
        assert late is not None
        won, _ = store.confirm(
            "late", now=late.expires_at, lease_until=now + 60, keep_until=now + KEEP
        )
        assert not won  # expired: not counted
        assert not _confirm(store, "missing")[0]
        assert _confirm(store, "off")[0]  # no country: counted nowhere
        day = _day(sent_at)
        expected = {(day, "US", SENDER): _counts(sent=8, confirmed=7, b0=3, b1=1, b8=1, b10=2)}
        assert _figures(insights, day, _day(now)) == expected, (
            "a confirm that wins counts confirmed +1 and the bucket of now - created_at "
            "(upper bounds included; a negative delay in bucket 0) in the day of the send; "
            "a confirm that does not win counts nothing"
        )

    def test_insights_count_outcomes_that_apply(self, store: Store) -> None:
        insights = self._insights(store)
        for name in ("r", "f", "held", "pending"):
            store.add(_record(name, country="GB", sender=SENDER))
            if name != "pending":
                assert _confirm(store, name, lease=-1)[0]
        assert store.mark_reported("r", SID)
        assert not store.mark_reported("r", SID)  # already reported
        assert not store.mark_failed("r", SID, code=20404, message="not found")
        assert not store.mark_reported("f", OTHER_SID)  # another message
        assert store.defer("f", SID, lease_until=0.0, attempts=1, code=None, message="5xx")
        assert store.renew([("held", SID)], lease_until=time.time() + 60) == 1
        assert _claim_ids(store) == ["f"]  # a claim counts nothing either
        assert store.mark_failed("f", SID, code=21610, message="unsubscribed")
        assert not store.mark_failed("f", SID, code=21610, message="unsubscribed")
        assert not store.mark_reported("pending", SID)  # never confirmed
        today = _day(time.time())
        key = (today, "GB", SENDER)
        assert _figures(insights, today, today) == {
            key: _counts(sent=4, confirmed=3, reported=1, failed=1, b0=3)
        }, "mark_reported and mark_failed count when they apply, and only then"
        if isinstance(store, AdminStore):
            now = time.time()
            assert store.requeue_failed(now=now, keep_until=now + KEEP) == 1
            assert _figures(insights, today, today)[key] == _counts(
                sent=4, confirmed=3, reported=1, b0=3
            ), "requeue_failed takes its records out of the failed count"
            assert store.mark_reported("f", SID)
            assert _figures(insights, today, today)[key] == _counts(
                sent=4, confirmed=3, reported=2, b0=3
            )

    def test_insights_uncount_a_refused_send(self, store: Store) -> None:
        insights = self._insights(store)
        for name in ("refused", "sent", "bound"):
            sid = SID if name == "bound" else None
            store.add(_record(name, sid=sid, country="DE", sender=SENDER))
        store.attach_sid("sent", SID, ACCOUNT)
        for name in ("refused", "sent", "bound"):
            store.delete(name)
        store.delete("missing")
        today = _day(time.time())
        assert _figures(insights, today, today) == {(today, "DE", SENDER): _counts(sent=2)}, (
            "delete takes back the sent count of a record that never had a message SID "
            "(Twilio refused the send), and only of such a record"
        )

    def test_insights_outlive_their_records(self, store: Store) -> None:
        insights = self._insights(store)
        sent_at = time.time() - 2 * DAY
        ttl = 2.0  # for stores that expire records by themselves, on their own clock
        for name in ("reported", "failed", "pending"):
            store.add(_record(name, created_at=sent_at, ttl=ttl, country="BR", sender=SENDER))
            if name != "pending":
                now = time.time()
                assert store.confirm(name, now=now, lease_until=now, keep_until=now)[0]
        store.mark_reported("reported", SID)
        store.mark_failed("failed", SID, code=21610, message="unsubscribed")
        day, today = _day(sent_at), _day(time.time())
        before = _figures(insights, day, today)
        assert before[(day, "BR", SENDER)]["confirmed"] == 2
        store.purge(now=time.time() + 10 * KEEP)
        deadline = time.monotonic() + 10 * ttl
        while any(store.get(name) for name in ("reported", "failed", "pending")):
            assert time.monotonic() < deadline, "the records did not expire"
            time.sleep(0.05)  # a backend that expires records by itself, on its own clock
            store.purge(now=time.time() + 10 * KEEP)
        assert _figures(insights, day, today) == before, (
            "purging or expiring records changes no past figure"
        )

    def test_insights_count_contended_confirms_once(self, store: Store) -> None:
        insights = self._insights(store)
        ids = [f"c{n}" for n in range(30)]
        for tracking_id in ids:
            store.add(_record(tracking_id, country="IN", sender=SENDER))
        won: list[str] = []
        lock = threading.Lock()

        def attempt(index: int) -> None:
            order = ids[index:] + ids[:index]
            mine = [tracking_id for tracking_id in order if _confirm(store, tracking_id)[0]]
            with lock:
                won.extend(mine)

        _in_threads(8, attempt)
        assert sorted(won) == sorted(ids)
        today = _day(time.time())
        figures = _figures(insights, today, today)[(today, "IN", SENDER)]
        assert figures["confirmed"] == len(ids), (
            f"insights must count each confirmation once: {figures['confirmed']} counted "
            f"for {len(ids)} records confirmed by 8 threads"
        )
        assert sum(figures["ttc"].values()) == len(ids)

    def test_insights_through_the_async_twin(self, store: Store) -> None:
        insights = self._insights(store)

        async def scenario() -> None:
            astore = as_async_store(store)
            try:
                await astore.add(_record("a", country="JP", sender=SENDER))
                await astore.add(_record("refused", sid=None, country="JP", sender=SENDER))
                await astore.delete("refused")
                now = time.time()
                won, record = await astore.confirm(
                    "a", now=now, lease_until=now + 60, keep_until=now + KEEP
                )
                assert won
                assert record is not None
                assert record.country == "JP"
            finally:
                await astore.aclose()

        asyncio.run(scenario())
        today = _day(time.time())
        assert _figures(insights, today, today) == {
            (today, "JP", SENDER): _counts(sent=1, confirmed=1, b0=1)
        }, "the async twin counts as the store does"

    # -- the async twin --------------------------------------------------------------------

    def test_async_twin(self, store: Store) -> None:
        async def scenario() -> None:
            astore = as_async_store(store)
            try:
                await astore.add(_record("a", sid=None))
                # The sync view sees the same record. Called in a thread, as async code
                # must call a sync store (Django's refuses to run in the event loop).
                got = await asyncio.to_thread(store.get, "a")
                assert got is not None
                assert got.state is State.PENDING
                now = time.time()
                won, record = await astore.confirm(
                    "a", now=now, lease_until=now - 1, keep_until=now + KEEP
                )
                assert won
                assert record is not None
                assert record.state is State.CONFIRMED
                again, _ = await astore.confirm(
                    "a", now=now, lease_until=now - 1, keep_until=now + KEEP
                )
                assert not again
                assert await astore.attach_sid("missing", SID, ACCOUNT) is None
                attached = await astore.attach_sid("a", SID, None)
                assert attached is not None
                assert (attached.message_sid, attached.account_sid) == (SID, None)
                assert await asyncio.to_thread(_claim_ids, store) == ["a"]
                await astore.delete("a")
                assert await asyncio.to_thread(store.get, "a") is None
            finally:
                await astore.aclose()

        asyncio.run(scenario())
