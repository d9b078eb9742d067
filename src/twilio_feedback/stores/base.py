"""The Store protocol every backend implements, and the URL registry that picks one.

A store maps a tracking id to a :class:`~twilio_feedback.records.Record`. Two operations
must be atomic across every process sharing the store: :meth:`Store.confirm` (pending ->
confirmed, exactly once) and :meth:`Store.claim` (take unreported confirmations under a
lease). Every update the reporter makes afterwards (an outcome, a lease) names the record
it is about by tracking id *and* message SID, and applies only while that record is still
``confirmed``: a key bound again to a new message while the old one's report is in flight
keeps its new record. Times are passed in by the caller as Unix timestamps, so a backend
never reads a clock of its own and tests can drive time.

The rules every store keeps, each checked by :mod:`twilio_feedback.testing.conformance`:

- **Exactly once, across processes.** :meth:`Store.confirm` lets one caller win a record,
  whichever process it runs in; :meth:`Store.claim` never hands a record to two callers
  whose leases overlap. A lock inside one process is not enough for a store that several
  processes share.
- **The expiry boundary.** A record whose ``expires_at`` is at or before ``now`` is
  expired: :meth:`Store.confirm` refuses it and :meth:`Store.purge` deletes it (a record
  expiring exactly at ``now`` included).
- **Reads read no clock.** :meth:`Store.get` returns a record past its ``expires_at``
  until :meth:`Store.purge` deletes it, unless the backend expires records by itself on
  its own clock (a Redis TTL: see :attr:`BaseStore.expires_by_itself`).
- **Purge counts.** :meth:`Store.purge` returns how many records it removed.
- **Error messages are cut** to their first :data:`ERROR_MESSAGE_LENGTH` characters.
- **Outcome updates never create a record**: :meth:`Store.mark_reported`,
  :meth:`Store.mark_failed`, :meth:`Store.defer` and :meth:`Store.renew` change only a
  record still ``confirmed`` with the message SID they name.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from ..insights import Cell
from ..records import Record, State

__all__ = [
    "ERROR_MESSAGE_LENGTH",
    "REQUIRED_METHODS",
    "AdminStore",
    "AsyncStore",
    "AsyncStores",
    "BaseStore",
    "HealthStore",
    "InsightsStore",
    "Store",
    "StoreFactory",
    "ThreadedAsyncStore",
    "as_async_store",
    "check_store",
    "clip_error_message",
    "register_store",
    "registered_schemes",
    "store_from_url",
]


@runtime_checkable
class Store(Protocol):
    """What the tracker and the reporter need from a backend.

    Implement these methods (synchronously, thread-safe) to plug in your own storage; run
    :mod:`twilio_feedback.testing.conformance` against it to check the contract. A store
    may also offer ``as_async() -> AsyncStore`` for native async I/O; without it, async
    callers run the sync methods in a worker thread.
    """

    @abc.abstractmethod
    def add(self, record: Record) -> None:
        """Insert ``record``, replacing any record with the same tracking id (its error
        message cut to :data:`ERROR_MESSAGE_LENGTH` characters)."""

    @abc.abstractmethod
    def get(self, tracking_id: str) -> Record | None:
        """Return the record, or ``None`` when there is none (purged records included).

        Reads no clock: a record past its ``expires_at`` is returned as it is until
        :meth:`purge` deletes it (or, for a store that expires records by itself, the
        backend does). The caller decides what expired means.
        """

    @abc.abstractmethod
    def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        """Set the message and account SIDs of a record; return it, or ``None`` if gone.

        ``account_sid`` ``None`` means the settings' own account (what the tracker passes
        for it, so that records do not repeat it): store no account SID then, clearing
        one the record had."""

    @abc.abstractmethod
    def delete(self, tracking_id: str) -> None:
        """Remove a record if present."""

    @abc.abstractmethod
    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """Atomically move a live ``pending`` record to ``confirmed``.

        Only a record whose ``expires_at`` is after ``now`` can be confirmed: one that
        expires exactly at ``now`` is expired, whatever the backend's own clock says. On
        success
        set ``confirmed_at=now``, ``lease_until`` (the confirming process owns the report
        for that long) and ``expires_at=max(expires_at, keep_until)`` (so the outbox
        outlives the retry window), and return ``(True, new_record)``. Otherwise change
        nothing and return ``(False, record_or_None)``, the record as it is once the
        confirmation lost (a loser to a concurrent winner gets it ``confirmed``): exactly
        one caller across every process sharing the store may ever get ``True`` for one
        tracking id.
        """

    @abc.abstractmethod
    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        """Atomically take up to ``limit`` confirmed records that have a message SID and
        whose lease ended at or before ``now``, setting their ``lease_until``; return them.

        No record may be handed to two callers whose leases overlap.
        """

    @abc.abstractmethod
    def renew(self, held: Sequence[tuple[str, str]], *, lease_until: float) -> int:
        """Extend the leases of the records a live reporter holds; return how many it holds.

        ``held`` lists ``(tracking_id, message_sid)`` pairs. For each record that is still
        ``confirmed`` with that message SID, set ``lease_until`` to the given value unless
        it is already later (a renewal never shortens a lease), and count it. Other pairs
        (gone, bound again to another message, reported, failed) change nothing. One call
        renews every pair: the reporter's heartbeat makes one call for all its records, so
        a backend should do it in one round trip (or a few, for thousands of pairs).
        """

    @abc.abstractmethod
    def mark_reported(self, tracking_id: str, message_sid: str) -> bool:
        """Twilio accepted the feedback for ``message_sid``: state ``reported``, lease
        cleared. Applies only while the record is ``confirmed`` with that message SID;
        return whether it did. Never creates a record."""

    @abc.abstractmethod
    def mark_failed(
        self, tracking_id: str, message_sid: str, *, code: int | None, message: str | None
    ) -> bool:
        """Twilio refused the feedback for ``message_sid`` for good: state ``failed``, lease
        cleared, with its error (the message cut to :data:`ERROR_MESSAGE_LENGTH`
        characters). Applies only while the record is ``confirmed`` with that message SID;
        return whether it did. Never creates a record."""

    @abc.abstractmethod
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
        """A transient failure: keep ``confirmed``, set ``lease_until`` (exactly: it may
        shorten the lease) with ``attempts`` and the error (the message cut to
        :data:`ERROR_MESSAGE_LENGTH` characters). Applies only while the record is
        ``confirmed`` with that message SID; return whether it did. Never creates a
        record."""

    @abc.abstractmethod
    def purge(self, *, now: float) -> int:
        """Delete the records whose ``expires_at`` is at or before ``now``; return how many
        records it removed.

        A store that expires records by itself (a Redis TTL) may leave them to the
        backend, and returns how many expired records it tidied up after (Redis: their
        outbox entries).
        """

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Live records by state name (``pending``, ``confirmed``, ``reported``, ``failed``)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. Called once by :meth:`FeedbackTracker.close`."""


@runtime_checkable
class AdminStore(Store, Protocol):
    """Operations the ``twilio-feedback`` command adds to :class:`Store`.

    Optional for your own stores: without them the command's ``status --failed`` and
    ``retry-failed`` say the store does not support them; everything else works. They are
    run by an operator, not on a request path, so a backend may scan.
    """

    @abc.abstractmethod
    def list_records(self, state: State, *, limit: int) -> list[Record]:
        """Up to ``limit`` live records in ``state``, the most recently created first."""

    @abc.abstractmethod
    def requeue_failed(self, *, now: float, keep_until: float) -> int:
        """Give every ``failed`` record another chance; return how many.

        Each becomes ``confirmed`` again with its lease ended (the next sweep takes it),
        ``attempts`` and the error cleared, ``confirmed_at=now`` (the retry window starts
        over) and ``expires_at=max(expires_at, keep_until)``.
        """


@runtime_checkable
class HealthStore(Store, Protocol):
    """The query health checks add to :class:`Store` (``tracker.health()``,
    ``twilio-feedback status --check``).

    Optional for your own stores: without it, health is ``unknown`` (the age of the oldest
    unreported confirmation cannot be told) and ``status --check`` says the store does not
    support it. It is run by monitors, every so often, not on a request path: a backend
    may read the whole outbox, which is small while delivery keeps up.
    """

    @abc.abstractmethod
    def oldest_unreported(self) -> float | None:
        """The ``confirmed_at`` of the oldest ``confirmed`` record that has a message SID
        (what a reporter can deliver: the outbox), whatever its lease; ``None`` when there
        is none. Records without a message SID (waiting for ``send()`` to learn it) are
        not counted."""


@runtime_checkable
class InsightsStore(Store, Protocol):
    """The query of the conversion insights (``tracker.insights()``,
    ``twilio-feedback report``) added to :class:`Store`.

    Optional for your own stores: without it, insights are not available and the report
    says so. A store that has it keeps every record's ``country`` and ``sender``, and,
    apart from the records, the counts of :class:`~twilio_feedback.insights.Cell` per
    (day the message was sent, :func:`~twilio_feedback.insights.day_number` of
    ``created_at``; ``country``; ``sender``, ``unknown`` when ``None``), so that purging
    or expiring records changes no past figure:

    - ``sent`` +1 when :meth:`Store.add` writes a record (adding one again under the same
      tracking id counts again: it is another message); -1 when :meth:`Store.delete`
      removes one that never had a message SID (a send Twilio refused);
    - ``confirmed`` +1, and the time-to-confirm bucket
      (:func:`~twilio_feedback.insights.ttc_bucket`) of ``now - created_at`` +1, when
      :meth:`Store.confirm` wins; a confirm that does not win counts nothing;
    - ``reported`` / ``failed`` +1 when :meth:`Store.mark_reported` /
      :meth:`Store.mark_failed` apply; ``failed`` -1 for each record
      :meth:`AdminStore.requeue_failed` gives another chance. Nothing else counts.

    A record whose ``country`` is ``None`` (``Settings.insights`` off) counts nowhere.
    Each count is made in the same atomic operation as the change it counts (the same
    lock, statement, transaction or script): a confirm stays one round trip, and a count
    is never made for a change that did not happen.
    """

    @abc.abstractmethod
    def insight_cells(self, since: date, until: date) -> list[Cell]:
        """Every cell whose day is from ``since`` to ``until`` (both included, UTC), in
        any order; a cell whose counts are all zero may be left out or not."""


ERROR_MESSAGE_LENGTH = 500
"""The characters of an error message a store keeps (:meth:`Store.mark_failed`,
:meth:`Store.defer`, :meth:`Store.add`); the rest is cut off, so a record stays small
whatever Twilio or a proxy answers."""


def clip_error_message(message: str | None) -> str | None:
    """``message`` cut to :data:`ERROR_MESSAGE_LENGTH` characters; ``None`` for none or
    an empty one. Every built-in store keeps messages through it."""
    return message[:ERROR_MESSAGE_LENGTH] if message else None


REQUIRED_METHODS = (
    "add",
    "get",
    "attach_sid",
    "delete",
    "confirm",
    "claim",
    "renew",
    "mark_reported",
    "mark_failed",
    "defer",
    "purge",
    "counts",
    "close",
)
"""The methods of :class:`Store`, in its order: every store has them all."""


def check_store(store: object) -> None:
    """Raise :class:`~twilio_feedback.ConfigurationError` naming the first method of
    :data:`REQUIRED_METHODS` that ``store`` lacks or cannot call.

    The tracker runs it when it starts, so that a store written for another release (or
    not a store at all) is refused at once rather than failing on its first sweep.
    """
    name = type(store).__name__
    for method in REQUIRED_METHODS:
        attr = getattr(store, method, None)
        if attr is None and not hasattr(store, method):
            needed = ", ".join(f"{m}()" for m in REQUIRED_METHODS)
            raise ConfigurationError(
                f"store {name} has no {method}(): a store needs {needed} (see the Store "
                "protocol in the stores guide, 'Writing your own')"
            )
        if not callable(attr):
            raise ConfigurationError(
                f"store {name}'s {method} is not callable (it is {type(attr).__name__}): "
                "see the Store protocol in the stores guide, 'Writing your own'"
            )


class BaseStore(AdminStore):
    """The base class of the built-in stores: :class:`Store` and :class:`AdminStore` as
    abstract methods, their docstrings included, with a no-op :meth:`close` and the thread
    offload as :meth:`as_async`.

    A store of your own may inherit it too (then it implements the operator commands as
    well), or simply have the methods of :class:`Store`: the protocol is structural, and
    the tracker needs no base class.
    """

    shared: ClassVar[bool] = True
    """Whether processes (and hosts) can share the store: each sees the others' records,
    and :meth:`~Store.confirm` and :meth:`~Store.claim` are atomic across them all.
    ``False`` for a store that lives inside one process (``memory://``); the conformance
    suite's cross-process races then skip."""

    expires_by_itself: ClassVar[bool] = False
    """Whether the backend deletes expired records by itself, on its own clock (a Redis
    TTL, the memory store's cache). Such a store's :meth:`~Store.get` may stop returning
    a record once its ``expires_at`` has passed, and :meth:`~Store.purge` may leave
    records to the backend; every other store returns them until purged."""

    def close(self) -> None:
        """Release connections. Called once by :meth:`FeedbackTracker.close`; here,
        nothing to release."""

    def as_async(self) -> AsyncStore:
        """The async twin (:class:`AsyncStore`): here the sync methods in a worker
        thread, so that the event loop never blocks."""
        return ThreadedAsyncStore(self)

    # The reporter's outcomes, written once for every built-in store: which fields each
    # one changes. A backend supplies the guarded write, _outcome().

    def mark_reported(self, tracking_id: str, message_sid: str) -> bool:
        return self._outcome(
            tracking_id, message_sid, {"state": State.REPORTED, "lease_until": 0.0}
        )

    def mark_failed(
        self, tracking_id: str, message_sid: str, *, code: int | None, message: str | None
    ) -> bool:
        changes = {
            "state": State.FAILED,
            "lease_until": 0.0,
            "error_code": code,
            "error_message": clip_error_message(message),
        }
        return self._outcome(tracking_id, message_sid, changes)

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
        changes = {
            "lease_until": lease_until,
            "attempts": attempts,
            "error_code": code,
            "error_message": clip_error_message(message),
        }
        return self._outcome(tracking_id, message_sid, changes)

    @abc.abstractmethod
    def _outcome(self, tracking_id: str, message_sid: str, changes: Mapping[str, Any]) -> bool:
        """Apply ``changes`` (record field -> value; ``state`` as a :class:`State`) to the
        record, atomically, only while it is ``confirmed`` with ``message_sid``; return
        whether it did. A change of ``state`` takes the record out of the outbox; a new
        ``lease_until`` alone keeps it there, due then."""


class AsyncStore(Protocol):
    """The async twin of :class:`Store`, used by the tracker's ``*_async`` methods.

    Only what a request awaits: writing a record, attaching its SIDs, deleting it, and
    the confirmation. Everything else (the reporter's claims and outcomes, purges,
    counts) runs in the tracker's threads, on the sync store.
    """

    async def add(self, record: Record) -> None:
        """Async :meth:`Store.add`."""

    async def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        """Async :meth:`Store.attach_sid`."""

    async def delete(self, tracking_id: str) -> None:
        """Async :meth:`Store.delete`."""

    async def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """Async :meth:`Store.confirm`."""

    async def aclose(self) -> None:
        """Release async connections. Called once by :meth:`FeedbackTracker.aclose`."""


class ThreadedAsyncStore(AsyncStore):
    """Runs a sync :class:`Store` in a worker thread so the event loop never blocks."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))

    async def add(self, record: Record) -> None:
        await self._run(self.store.add, record)

    async def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        result: Record | None = await self._run(
            self.store.attach_sid, tracking_id, message_sid, account_sid
        )
        return result

    async def delete(self, tracking_id: str) -> None:
        await self._run(self.store.delete, tracking_id)

    async def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        result: tuple[bool, Record | None] = await self._run(
            self.store.confirm,
            tracking_id,
            now=now,
            lease_until=lease_until,
            keep_until=keep_until,
        )
        return result

    async def aclose(self) -> None:
        """Nothing to release: the sync store is closed by the tracker."""


def as_async_store(store: Store) -> AsyncStore:
    """The store's own async twin when it offers one (``as_async()``), else a thread offload."""
    native = getattr(store, "as_async", None)
    if callable(native):
        result: AsyncStore = native()
        return result
    return ThreadedAsyncStore(store)


class AsyncStores:
    """The async twins of one store, one per event loop: what a tracker holds.

    An async client belongs to the event loop it was made in (a ``redis.asyncio`` pool
    cannot serve another loop), so each loop that awaits the store gets its own twin,
    made by :func:`as_async_store` on first use and closed on that loop by
    :meth:`aclose`. A twin whose loop is gone is forgotten with it.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._twins: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncStore] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def current(self) -> AsyncStore:
        """The running event loop's twin."""
        loop = asyncio.get_running_loop()
        with self._lock:
            twin = self._twins.get(loop)
            if twin is None:
                twin = self._twins[loop] = as_async_store(self.store)
            return twin

    async def aclose(self) -> None:
        """Close the running event loop's twin, if it has one (the next use makes a new
        one); twins of other loops are left to their loops."""
        with self._lock:
            twin = self._twins.pop(asyncio.get_running_loop(), None)
        if twin is not None:
            await twin.aclose()


StoreFactory = Callable[..., Store]
"""A callable taking ``(url, **options)`` and returning a :class:`Store`."""

_REGISTRY: dict[str, StoreFactory | str] = {
    "memory": "twilio_feedback.stores.memory:MemoryStore.from_url",
    "sqlite": "twilio_feedback.stores.sql:SQLStore.from_url",
    "postgresql": "twilio_feedback.stores.sql:SQLStore.from_url",
    "postgres": "twilio_feedback.stores.sql:SQLStore.from_url",
    "redis": "twilio_feedback.stores.redis:RedisStore.from_url",
    "rediss": "twilio_feedback.stores.redis:RedisStore.from_url",
    "unix": "twilio_feedback.stores.redis:RedisStore.from_url",
}
_ENTRY_POINT_GROUP = "twilio_feedback.stores"


def register_store(scheme: str, factory: StoreFactory | str) -> None:
    """Make ``store_from_url`` build ``factory(url, **options)`` for URLs of ``scheme``.

    ``factory`` may be a callable or a ``"module:attr"`` string imported on first use.
    Packages can register without being imported by declaring an entry point in the
    ``twilio_feedback.stores`` group named after the scheme.
    """
    if not scheme or not scheme.replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"invalid store scheme {scheme!r}")
    _REGISTRY[scheme.lower()] = factory


def registered_schemes() -> list[str]:
    """Every scheme ``store_from_url`` understands, entry points included."""
    names = set(_REGISTRY)
    names.update(ep.name for ep in entry_points(group=_ENTRY_POINT_GROUP))
    return sorted(names)


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    # SQLAlchemy spells drivers as "postgresql+psycopg"; the dialect picks the backend.
    return scheme.split("+", 1)[0]


def is_known_scheme(url: str) -> bool:
    """Whether ``store_from_url`` has a backend for this URL's scheme."""
    return _scheme(url) in registered_schemes()


def _resolve(target: StoreFactory | str) -> StoreFactory:
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    import importlib

    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    factory: StoreFactory = obj
    return factory


def store_from_url(url: str, **options: Any) -> Store:
    """Build a store from a URL: ``memory://``, ``sqlite:///path.db``,
    ``postgresql+psycopg://user@host/db``, ``redis://host:6379/0``, or any scheme added
    with :func:`register_store` or an entry point. Options go to the backend."""
    scheme = _scheme(url)
    target: StoreFactory | str | None = _REGISTRY.get(scheme)
    if target is None:
        for ep in entry_points(group=_ENTRY_POINT_GROUP):
            if ep.name == scheme:
                target = ep.load()
                break
    if target is None:
        known = ", ".join(f"{s}://" for s in registered_schemes())
        raise ConfigurationError(
            f"unknown store scheme {scheme + '://' if scheme else repr(url)}; "
            f"use one of {known}, or register_store() your own"
        )
    return _resolve(target)(url, **options)
