"""The in-process store: a cachetools TLRU cache behind one lock.

Each record expires at its own ``expires_at``. Fast and dependency-free, but neither
durable (a restart forgets every confirmation not yet reported) nor shared between
processes (a confirm in one gunicorn worker is unknown to another): it says so once, in a
warning, when created from the default settings.
"""

from __future__ import annotations

import heapq
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, TypeGuard
from urllib.parse import parse_qs, urlsplit

from cachetools import TLRUCache

from ..insights import (
    COUNTS,
    EPOCH,
    TTC_BUCKETS,
    UNKNOWN_SENDER,
    Cell,
    cell_from_counts,
    day_number,
    ttc_bucket,
)
from ..records import Record, State
from .base import BaseStore, InsightsStore, clip_error_message

__all__ = ["MemoryStore", "MemoryStoreWarning"]


_RENEW_BATCH = 256
_WIDTH = len(COUNTS) + len(TTC_BUCKETS)
_SENT, _CONFIRMED, _REPORTED, _FAILED = range(4)


class MemoryStoreWarning(UserWarning):
    """The memory store is in use: not durable, not shared between processes."""


_warned = False
_warn_lock = threading.Lock()


def _warn_once() -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        "twilio-feedback is using the in-memory store: confirmations not yet reported are "
        "lost on restart and are not shared between processes. Set store= to a sqlite://, "
        "postgresql:// or redis:// URL for production.",
        MemoryStoreWarning,
        stacklevel=4,
    )


def _ttu(_key: str, record: Record, _now: float) -> float:
    return record.expires_at


def _is_reporting(record: Record | None, message_sid: str) -> TypeGuard[Record]:
    """Whether ``record`` is the confirmation of ``message_sid``, still being reported."""
    return (
        record is not None and record.state is State.CONFIRMED and record.message_sid == message_sid
    )


class MemoryStore(BaseStore, InsightsStore):
    """A thread-safe :class:`~twilio_feedback.stores.Store` in this process's memory.

    ``maxsize`` bounds the number of records; past it the least recently used go first.
    ``warn=True`` emits :class:`MemoryStoreWarning` once per process. Records expire by
    themselves at their ``expires_at`` (the cache's clock is ``timer``, ``time.time`` by
    default), and :meth:`purge` touches only the expired ones. Claims pop due records
    from a heap, and :meth:`renew` takes the lock per batch of records, so that
    confirmations never wait behind the renewal of a long backlog. Not shared between
    processes (:attr:`shared` is ``False``). The insights' counts
    (:class:`~twilio_feedback.stores.InsightsStore`) are dicts beside the cache, gone with
    the process.
    """

    shared = False
    expires_by_itself = True

    def __init__(self, maxsize: int = 1_000_000, *, warn: bool = False, timer: Any = None) -> None:
        self._lock = threading.Lock()
        self._cache: TLRUCache[str, Record] = TLRUCache(
            maxsize=maxsize, ttu=_ttu, timer=timer or time.time
        )
        # The outbox: (lease end, id) of confirmed records with a SID, in a heap, so
        # claim() pops only what is due. Entries go stale when a record changes; claim()
        # drops those whose lease no longer matches the record's.
        self._outbox: list[tuple[float, str]] = []
        # The insights: (day number, country, sender) -> COUNTS then the TTC histogram.
        self._cells: dict[tuple[int, str, str], list[int]] = {}
        if warn:
            _warn_once()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MemoryStore:
        """``memory://``, ``memory://?maxsize=100000``; ``memory://?warn=false`` (tests)
        without the warning."""
        query = parse_qs(urlsplit(url).query)
        if "maxsize" in query:
            options.setdefault("maxsize", int(query["maxsize"][0]))
        if "warn" in query:
            options.setdefault("warn", query["warn"][0].lower() not in ("0", "false", "no", "off"))
        options.setdefault("warn", True)
        return cls(**options)

    def __repr__(self) -> str:
        return f"MemoryStore(maxsize={self._cache.maxsize})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def _get(self, tracking_id: str) -> Record | None:
        return self._cache.get(tracking_id)

    def _put(self, record: Record) -> None:
        self._cache[record.tracking_id] = record
        if record.state is State.CONFIRMED and record.message_sid is not None:
            heapq.heappush(self._outbox, (record.lease_until, record.tracking_id))

    def _count(self, record: Record, index: int, by: int = 1, bucket: int | None = None) -> None:
        if record.country is None:
            return
        key = (day_number(record.created_at), record.country, record.sender or UNKNOWN_SENDER)
        counts = self._cells.get(key)
        if counts is None:
            counts = self._cells[key] = [0] * _WIDTH
        counts[index] += by
        if bucket is not None:
            counts[len(COUNTS) + bucket] += 1

    def add(self, record: Record) -> None:
        if record.error_message is not None:
            record = record.replace(error_message=clip_error_message(record.error_message))
        with self._lock:
            self._put(record)
            self._count(record, _SENT)

    def get(self, tracking_id: str) -> Record | None:
        with self._lock:
            return self._get(tracking_id)

    def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        with self._lock:
            record = self._get(tracking_id)
            if record is None:
                return None
            record = record.replace(message_sid=message_sid, account_sid=account_sid)
            self._put(record)
            return record

    def delete(self, tracking_id: str) -> None:
        with self._lock:
            record = self._cache.pop(tracking_id, None)
            if record is not None and record.message_sid is None:
                self._count(record, _SENT, -1)  # never sent: Twilio refused it

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        with self._lock:
            record = self._get(tracking_id)
            if record is None or record.state is not State.PENDING or record.expires_at <= now:
                return False, record
            record = record.replace(
                state=State.CONFIRMED,
                confirmed_at=now,
                lease_until=lease_until,
                expires_at=max(record.expires_at, keep_until),
            )
            self._put(record)
            self._count(record, _CONFIRMED, bucket=ttc_bucket(now - record.created_at))
            return True, record

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        claimed: list[Record] = []
        outbox = self._outbox
        with self._lock:
            while outbox and outbox[0][0] <= now and len(claimed) < limit:
                lease, tracking_id = heapq.heappop(outbox)
                record = self._get(tracking_id)
                if (
                    record is None
                    or record.state is not State.CONFIRMED
                    or record.message_sid is None
                    or record.lease_until != lease
                ):
                    continue  # a stale entry: the record moved on
                record = record.replace(lease_until=lease_until)
                self._put(record)
                claimed.append(record)
        return claimed

    def renew(self, held: Sequence[tuple[str, str]], *, lease_until: float) -> int:
        count = 0
        for first in range(0, len(held), _RENEW_BATCH):
            with self._lock:
                for tracking_id, message_sid in held[first : first + _RENEW_BATCH]:
                    record = self._get(tracking_id)
                    if not _is_reporting(record, message_sid):
                        continue
                    count += 1
                    if record.lease_until < lease_until:
                        self._put(record.replace(lease_until=lease_until))
                self._compact()
        return count

    def _outcome(self, tracking_id: str, message_sid: str, changes: Mapping[str, Any]) -> bool:
        with self._lock:
            record = self._get(tracking_id)
            if not _is_reporting(record, message_sid):
                return False
            self._put(record.replace(**changes))
            state = changes.get("state")
            if state is State.REPORTED:
                self._count(record, _REPORTED)
            elif state is State.FAILED:
                self._count(record, _FAILED)
            return True

    def _compact(self) -> None:
        # Every lease change pushes a heap entry; drop the stale ones once they dominate.
        if len(self._outbox) > 2 * len(self._cache) + 1024:
            self._outbox = [
                (lease, key)
                for lease, key in self._outbox
                if (r := self._cache.get(key)) is not None and r.lease_until == lease
            ]
            heapq.heapify(self._outbox)

    def purge(self, *, now: float) -> int:
        with self._lock:
            expired = self._cache.expire(now)
            self._compact()
            return len(expired)

    def list_records(self, state: State, *, limit: int) -> list[Record]:
        state = State(state)
        with self._lock:
            found = [record for record in self._cache.values() if record.state is state]
        found.sort(key=lambda record: record.created_at, reverse=True)
        return found[:limit]

    def requeue_failed(self, *, now: float, keep_until: float) -> int:
        with self._lock:
            failed = [record for record in self._cache.values() if record.state is State.FAILED]
            for record in failed:
                self._put(
                    record.replace(
                        state=State.CONFIRMED,
                        confirmed_at=now,
                        lease_until=0.0,
                        attempts=0,
                        error_code=None,
                        error_message=None,
                        expires_at=max(record.expires_at, keep_until),
                    )
                )
                self._count(record, _FAILED, -1)
        return len(failed)

    def insight_cells(self, since: date, until: date) -> list[Cell]:
        """See :meth:`InsightsStore.insight_cells`."""
        first, last = (since - EPOCH).days, (until - EPOCH).days
        with self._lock:
            found = [(key, list(counts)) for key, counts in self._cells.items()]
        return sorted(
            (
                cell_from_counts(day, country, sender, counts)
                for (day, country, sender), counts in found
                if first <= day <= last
            ),
            key=lambda cell: (cell.day, cell.country, cell.sender),
        )

    def oldest_unreported(self) -> float | None:
        """See :meth:`HealthStore.oldest_unreported` (reads the outbox)."""
        with self._lock:
            found = [
                record.confirmed_at or record.created_at
                for record in map(self._get, {tracking_id for _, tracking_id in self._outbox})
                if record is not None
                and record.state is State.CONFIRMED
                and record.message_sid is not None
            ]
        return min(found, default=None)

    def counts(self) -> dict[str, int]:
        result = {state.value: 0 for state in State}
        with self._lock:
            for record in self._cache.values():
                result[record.state.value] += 1
        return result

    def as_async(self) -> _InlineAsyncMemoryStore:
        """An async view that calls straight through: nothing here waits on I/O."""
        return _InlineAsyncMemoryStore(self)


class _InlineAsyncMemoryStore:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def add(self, record: Record) -> None:
        self.store.add(record)

    async def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        return self.store.attach_sid(tracking_id, message_sid, account_sid)

    async def delete(self, tracking_id: str) -> None:
        self.store.delete(tracking_id)

    async def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        return self.store.confirm(
            tracking_id, now=now, lease_until=lease_until, keep_until=keep_until
        )

    async def aclose(self) -> None:
        return None
