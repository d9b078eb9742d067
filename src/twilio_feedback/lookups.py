"""Background lookups of message SIDs that a failed send could not learn.

When ``send()`` fails after Twilio may have created the message (a timeout, a dropped
connection, a 5xx, an unreadable 2xx), the SMS may well arrive and its link be clicked, but
the tracker does not know the message's SID, so it cannot report the click. A
:class:`SidLookups` asks Twilio for it in the background: it lists the messages sent to
the recipient since the send started, matches the one whose body holds the unique link
(``link=`` sends) or is the exact text (``key=`` sends), attaches its SID to the record,
and hands a record confirmed meanwhile to the reporter.

What a lookup needs (recipient, sender, body or link, time) stays in this process's memory,
only for such records and only until the lookup ends; it never reaches the store or a log.
A process that exits or dies loses its pending lookups: the clicks still count, but their
reports cannot be made.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import FeedbackError, StorageError
from .lifecycle import ProcessLocal
from .records import Record

if TYPE_CHECKING:
    from .stores.base import Store
    from .twilio_api import TwilioAPI

__all__ = ["LOOKUP_WINDOW", "SidLookups"]

logger = logging.getLogger("twilio_feedback.lookups")

LOOKUP_WINDOW = 900.0
"""Seconds a lookup keeps trying (15 minutes) before it gives up."""
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
MAX_PENDING = 10_000
_SAME_RECORD = 1e-3  # created_at tolerance, for stores that round floats


@dataclass(slots=True)
class _Lookup:
    tracking_id: str
    created_at: float  # which record this is, should the key be sent again meanwhile
    account_sid: str
    since: float
    give_up_at: float  # monotonic
    # Personal data (a phone number, the message): memory only, never in a repr or a log.
    to: str = field(repr=False)
    from_: str | None = field(repr=False)
    body: str | None = field(repr=False)
    contains: str | None = field(repr=False)
    attempts: int = 0
    retry_after: float | None = None  # Twilio's, from the last failed attempt
    sid: str | None = None  # known already: only the store has to take it


class SidLookups(ProcessLocal):
    """Learns the SIDs of messages whose send failed ambiguously, off the request path.

    One daemon thread, started by the first :meth:`schedule`, runs the lookups one at a
    time: the first ``first_delay`` seconds after the send, then with exponential backoff
    and jitter (capped at ``max_delay``; Twilio's Retry-After when longer), the last when
    ``window`` seconds have passed, unless the message was found before. With
    ``max_pending=0`` (``reporter="off"``: no thread may run) nothing is looked up.
    ``on_found(record)`` gets the record with its SID attached (or ``None`` if it is
    gone), from the lookup thread. Fork-safe: a forked child starts with no lookups (its
    parent keeps its own). :meth:`close` stops the thread.
    """

    def __init__(
        self,
        api: TwilioAPI,
        store: Store,
        on_found: Callable[[Record | None], None],
        *,
        window: float = LOOKUP_WINDOW,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.api = api
        self.store = store
        self.on_found = on_found
        self.window = window
        """Seconds a lookup keeps trying; read when a lookup is scheduled."""
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.max_pending = max_pending
        super().__init__()

    def _init_state(self) -> None:
        super()._init_state()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._due: list[tuple[float, int, _Lookup]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._running: _Lookup | None = None
        self._closed = False
        self._counts = {"found": 0, "given_up": 0, "dropped": 0}

    def __repr__(self) -> str:
        return f"<SidLookups pending={self.pending()}>"

    def schedule(
        self,
        *,
        tracking_id: str,
        created_at: float,
        account_sid: str,
        to: str,
        since: float,
        from_: str | None = None,
        body: str | None = None,
        contains: str | None = None,
    ) -> bool:
        """Start looking for the message sent to ``to`` at or after ``since`` (epoch
        seconds) whose body is ``body`` or contains ``contains``, for the record
        ``tracking_id`` created at ``created_at``. Replaces a lookup for the same record.
        ``False`` when it cannot be scheduled (closed, or ``max_pending`` reached)."""
        if (body is None) == (contains is None):
            raise ValueError("pass body= (the exact text) or contains= (a unique part)")
        lookup = _Lookup(
            tracking_id,
            created_at,
            account_sid,
            since,
            time.monotonic() + self.window,
            to,
            from_,
            body,
            contains,
        )
        return self._enqueue(lookup)

    def attach_later(self, record: Record, message_sid: str, account_sid: str | None) -> bool:
        """Attach a SID that Twilio returned but the store could not take (it failed just
        then): tried in the background, with the same backoff and window as a lookup,
        until the store answers. ``account_sid`` ``None``: the settings' own. ``False``
        when it cannot be scheduled."""
        lookup = _Lookup(
            record.tracking_id,
            record.created_at,
            account_sid or str(self.api.settings.account_sid),
            record.created_at,
            time.monotonic() + self.window,
            "",
            None,
            None,
            None,
            sid=message_sid,
        )
        return self._enqueue(lookup)

    def _enqueue(self, lookup: _Lookup) -> bool:
        self._check_pid()
        tracking_id = lookup.tracking_id
        with self._lock:
            self._remove(tracking_id)
            if self._closed or len(self._due) >= self.max_pending:
                self._counts["dropped"] += 1
                accepted = False
            else:
                self._push(time.monotonic() + self.first_delay, lookup)
                accepted = True
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="twilio-feedback-sid-lookups", daemon=True
                    )
                    self._thread.start()
        if not accepted:
            if self._closed:
                why, reason = "closed", "closed"
            elif self.max_pending == 0:
                why, reason = "off", "no background lookups with reporter='off'"
            else:
                why, reason = "full", f"{self.max_pending} lookups pending"
            logger.warning(
                "no SID lookup for %s (%s): its confirmation cannot be reported",
                tracking_id,
                reason,
                extra={
                    "event": "sid_lookup_dropped",
                    "tracking_id": tracking_id,
                    "reason": why,
                },
            )
        return accepted

    def cancel(self, tracking_id: str) -> None:
        """Stop looking for the message of ``tracking_id`` (a new send replaced it)."""
        with self._lock:
            self._remove(tracking_id)

    def pending(self) -> int:
        """Lookups still trying (waiting or running)."""
        with self._lock:
            return len(self._due) + (1 if self._running else 0)

    def stats(self) -> dict[str, int]:
        """``found``, ``given_up`` and ``dropped`` since start (or since the fork), and
        ``pending``."""
        with self._lock:
            running = 1 if self._running else 0
            return {**self._counts, "pending": len(self._due) + running}

    def close(self, timeout: float = 1.0) -> int:
        """Stop the thread (waiting up to ``timeout`` for a lookup under way); return how
        many lookups were abandoned. Idempotent."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
            left = len(self._due) + (1 if self._running else 0)
            self._due.clear()
            thread = self._thread
            self._wake.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if left:
            logger.warning(
                "%d SID lookup(s) abandoned at close: those confirmations cannot be reported",
                left,
                extra={"event": "sid_lookups_abandoned", "count": left},
            )
        return left

    # -- the lookup thread ---------------------------------------------------------------

    def _push(self, due: float, lookup: _Lookup) -> None:
        heapq.heappush(self._due, (due, next(self._seq), lookup))
        self._wake.notify()

    def _remove(self, tracking_id: str) -> None:
        kept = [entry for entry in self._due if entry[2].tracking_id != tracking_id]
        if len(kept) != len(self._due):
            heapq.heapify(kept)
            self._due = kept
        if self._running is not None and self._running.tracking_id == tracking_id:
            self._running.give_up_at = float("-inf")  # not retried, not attached

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed:
                    now = time.monotonic()
                    if self._due and self._due[0][0] <= now:
                        break
                    self._wake.wait(self._due[0][0] - now if self._due else None)
                if self._closed:
                    return
                lookup = heapq.heappop(self._due)[2]
                self._running = lookup
            try:
                done = self._attempt(lookup)
            except StorageError:
                done = False  # the store is down; the boundary logged it
            except Exception:
                logger.exception(
                    "SID lookup for %s failed",
                    lookup.tracking_id,
                    extra={"event": "sid_lookup_error", "tracking_id": lookup.tracking_id},
                )
                done = False
            with self._lock:
                self._running = None
                if done or self._closed:
                    continue
                lookup.attempts += 1
                delay = min(self.max_delay, self.first_delay * 2**lookup.attempts)
                delay = max(random.uniform(0.75, 1.0) * delay, lookup.retry_after or 0.0)
                now = time.monotonic()
                if now < lookup.give_up_at:
                    # The last attempt is made when the window ends.
                    self._push(min(now + delay, lookup.give_up_at), lookup)
                    continue
                cancelled = lookup.give_up_at == float("-inf")
                if not cancelled:
                    self._counts["given_up"] += 1
            if not cancelled:
                logger.warning(
                    "gave up looking up the SID of the message for %s after %d attempt(s): "
                    "its confirmation cannot be reported",
                    lookup.tracking_id,
                    lookup.attempts,
                    extra={
                        "event": "sid_lookup_given_up",
                        "tracking_id": lookup.tracking_id,
                        "attempt": lookup.attempts,
                        "twilio_code": None,
                    },
                )

    def _attempt(self, lookup: _Lookup) -> bool:
        """One lookup; True when it is over (found, or nothing left to find for)."""
        try:
            sid = lookup.sid or self.api.find_message(
                account_sid=lookup.account_sid,
                to=lookup.to,
                from_=lookup.from_,
                since=lookup.since,
                body=lookup.body,
                contains=lookup.contains,
            )
        except FeedbackError as exc:
            logger.info(
                "SID lookup for %s failed: %s",
                lookup.tracking_id,
                exc.message,
                extra={
                    "event": "sid_lookup_failed",
                    "tracking_id": lookup.tracking_id,
                    "twilio_code": exc.code,
                    "http_status": exc.status,
                },
            )
            lookup.retry_after = exc.retry_after
            if exc.retryable:
                return False
            with self._lock:
                self._counts["given_up"] += 1
            logger.warning(
                "gave up looking up the SID of the message for %s: %s",
                lookup.tracking_id,
                exc.message,
                extra={
                    "event": "sid_lookup_given_up",
                    "tracking_id": lookup.tracking_id,
                    "attempt": lookup.attempts + 1,
                    "twilio_code": exc.code,
                },
            )
            return True
        lookup.retry_after = None
        if sid is None:
            return False
        record = self.store.get(lookup.tracking_id)
        same = (
            record is not None
            and record.message_sid is None
            and abs(record.created_at - lookup.created_at) <= _SAME_RECORD
        )
        with self._lock:
            if lookup.give_up_at == float("-inf"):
                return True  # cancelled meanwhile: a new send replaced the record
            self._counts["found"] += 1
        if not same:
            return True  # gone, bound by hand, or replaced by a new send under the same key
        account = self.api.settings.record_account(lookup.account_sid)
        bound = self.store.attach_sid(lookup.tracking_id, sid, account)
        logger.info(
            "learned the SID of the message for %s: %s",
            lookup.tracking_id,
            sid,
            extra={"event": "sid_found", "tracking_id": lookup.tracking_id, "message_sid": sid},
        )
        self.on_found(bound)
        return True
