"""A store of your own: a dict behind a lock, registered as ``dict://``.

Any object with the methods of :class:`twilio_feedback.stores.Store` works as
``Settings(store=...)``; registering a URL scheme also lets ``TWILIO_FEEDBACK_STORE=dict://``
and the ``twilio-feedback`` command find it. Check it with the conformance suite::

    from twilio_feedback.testing.conformance import StoreConformance

    class TestDictStore(StoreConformance):
        @pytest.fixture
        def store(self):
            return DictStore()

The two operations that must be atomic are ``confirm`` (exactly one caller wins) and
``claim`` (no record handed to two reporters at once); the reporter's updates (``renew``,
``mark_reported``, ``mark_failed``, ``defer``) apply only to the record still confirmed with
the message SID they name. Times always come from the caller.

Here one ``threading.Lock`` makes every method atomic, and that is enough only because the
records live in this process: the class says so (``shared = False``), and the conformance
suite skips its cross-process races. A lock inside one process is *not* enough for a store
that several processes share (gunicorn workers, hosts): each process has its own lock, and
4 processes confirming 40 links through a JSON file under such locks won 134 times. A
shared backend makes each operation atomic with its own primitive instead: a conditional
``UPDATE ... WHERE state = 'pending' RETURNING``, a transaction, a compare-and-set, a Lua
script, an OS file lock; and its test class gives the suite a ``store_factory`` so that
the races run in several processes.

Run ``python examples/custom_store.py`` to see it work.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from twilio_feedback import Record, State
from twilio_feedback.stores import clip_error_message, register_store, store_from_url


class DictStore:
    """Records in a dict, one lock around everything. Neither durable nor shared: an
    example, not something to run in production (use ``memory://`` for that role)."""

    shared = False  # the records live in this process: its lock is enough, and only here

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}

    @classmethod
    def from_url(cls, url: str, **options: Any) -> DictStore:
        """The factory ``register_store`` calls with the URL and any options."""
        return cls(**options)

    # -- the Store protocol --------------------------------------------------------------

    def add(self, record: Record) -> None:
        """Insert or replace."""
        record = record.replace(error_message=clip_error_message(record.error_message))
        with self._lock:
            self._records[record.tracking_id] = record

    def get(self, tracking_id: str) -> Record | None:
        """The record, or ``None``."""
        with self._lock:
            return self._records.get(tracking_id)

    def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        """Set the SIDs, whatever the state: a click may have confirmed the record first."""
        with self._lock:
            record = self._records.get(tracking_id)
            if record is None:
                return None
            record = record.replace(message_sid=message_sid, account_sid=account_sid)
            self._records[tracking_id] = record
            return record

    def delete(self, tracking_id: str) -> None:
        """Remove, if present."""
        with self._lock:
            self._records.pop(tracking_id, None)

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """pending -> confirmed, atomically; only a live record can be confirmed."""
        with self._lock:
            record = self._records.get(tracking_id)
            if record is None or record.state is not State.PENDING or record.expires_at <= now:
                return False, record
            record = record.replace(
                state=State.CONFIRMED,
                confirmed_at=now,
                lease_until=lease_until,
                expires_at=max(record.expires_at, keep_until),  # the outbox outlives the link
            )
            self._records[tracking_id] = record
            return True, record

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        """Take due confirmations (with a SID, lease over) and lease them to the caller."""
        with self._lock:
            due = [
                r
                for r in self._records.values()
                if r.state is State.CONFIRMED and r.message_sid and r.lease_until <= now
            ]
            due.sort(key=lambda r: r.lease_until)
            taken = [r.replace(lease_until=lease_until) for r in due[:limit]]
            for record in taken:
                self._records[record.tracking_id] = record
            return taken

    def renew(self, held: Sequence[tuple[str, str]], *, lease_until: float) -> int:
        """The heartbeat of a live reporter: extend (never shorten) the leases of the
        records it still holds; return how many it holds."""
        count = 0
        with self._lock:
            for tracking_id, message_sid in held:
                record = self._records.get(tracking_id)
                if record is None or not _reporting(record, message_sid):
                    continue
                count += 1
                if record.lease_until < lease_until:
                    self._records[tracking_id] = record.replace(lease_until=lease_until)
        return count

    def _outcome(self, tracking_id: str, message_sid: str, **changes: Any) -> bool:
        with self._lock:
            record = self._records.get(tracking_id)
            # Only the record that was reported: the key may have been bound to another
            # message meanwhile. Never create a record that is gone.
            if record is None or not _reporting(record, message_sid):
                return False
            self._records[tracking_id] = record.replace(**changes)
            return True

    def mark_reported(self, tracking_id: str, message_sid: str) -> bool:
        """Twilio accepted the feedback for this message."""
        return self._outcome(tracking_id, message_sid, state=State.REPORTED, lease_until=0.0)

    def mark_failed(
        self, tracking_id: str, message_sid: str, *, code: int | None, message: str | None
    ) -> bool:
        """Twilio refused it for good."""
        return self._outcome(
            tracking_id,
            message_sid,
            state=State.FAILED,
            lease_until=0.0,
            error_code=code,
            error_message=clip_error_message(message),  # the contract keeps 500 characters
        )

    def defer(
        self,
        tracking_id: str,
        message_sid: str,
        *,
        lease_until: float,
        attempts: int,
        code: int | None,
        message: str | None,
    ) -> bool:
        """A transient failure: stay confirmed, due again at ``lease_until``."""
        return self._outcome(
            tracking_id,
            message_sid,
            lease_until=lease_until,
            attempts=attempts,
            error_code=code,
            error_message=clip_error_message(message),
        )

    def purge(self, *, now: float) -> int:
        """Delete expired records."""
        with self._lock:
            expired = [k for k, r in self._records.items() if r.expires_at <= now]
            for key in expired:
                del self._records[key]
            return len(expired)

    def counts(self) -> dict[str, int]:
        """Records by state."""
        result = {state.value: 0 for state in State}
        with self._lock:
            for record in self._records.values():
                result[record.state.value] += 1
        return result

    def close(self) -> None:
        """Nothing to release."""

    # -- optional: the operator commands (AdminStore) --------------------------------------

    def list_records(self, state: State, *, limit: int) -> list[Record]:
        """Records in ``state``, newest first (``twilio-feedback status --failed``)."""
        with self._lock:
            found = [r for r in self._records.values() if r.state is State(state)]
        found.sort(key=lambda r: r.created_at, reverse=True)
        return found[:limit]

    def requeue_failed(self, *, now: float, keep_until: float) -> int:
        """failed -> confirmed, due at once (``twilio-feedback retry-failed``)."""
        with self._lock:
            failed = [r for r in self._records.values() if r.state is State.FAILED]
            for r in failed:
                self._records[r.tracking_id] = r.replace(
                    state=State.CONFIRMED,
                    confirmed_at=now,
                    lease_until=0.0,
                    attempts=0,
                    error_code=None,
                    error_message=None,
                    expires_at=max(r.expires_at, keep_until),
                )
            return len(failed)


def _reporting(record: Record, message_sid: str) -> bool:
    return record.state is State.CONFIRMED and record.message_sid == message_sid


register_store("dict", DictStore.from_url)


if __name__ == "__main__":
    store = store_from_url("dict://")
    now = time.time()
    store.add(Record("abc", expires_at=now + 60, message_sid="SM" + "0" * 32))
    print(store.confirm("abc", now=now, lease_until=now + 60, keep_until=now + 3600))
    print(store.confirm("abc", now=now, lease_until=now + 60, keep_until=now + 3600))
    print(store.counts())
