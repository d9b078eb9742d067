"""Confirmations the store could not take, kept in memory until it answers again.

When the store fails while the tracker confirms a verified link (a genuine, unexpired
token, or a key the app vouches for), the tracker keeps the tracking id here and answers
``deferred``. One background thread applies each kept confirmation, oldest first, with the
store's own atomic confirm, retrying with backoff while the store still fails: never on a
request path, never on an event loop. The buffer is bounded; past the bound a confirmation
is refused (the tracker answers ``error``), counted and logged. It lives in one process: a
process that dies loses what it held, and a forked child starts empty.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from . import telemetry
from .lifecycle import ProcessLocal, Throttle
from .retry import backoff

__all__ = ["COUNTERS", "Apply", "DeferredConfirmations"]

logger = logging.getLogger("twilio_feedback")

Apply = Callable[[str, float], None]
"""Apply one kept confirmation, ``(tracking_id, confirmed_at)``, to the store; raise when
the store still fails (the confirmation is kept and tried again)."""

COUNTERS = ("replayed", "deferred_dropped")
"""Counters of :meth:`DeferredConfirmations.stats` (plus ``deferred_pending``)."""

RETRY_BASE = 0.1
RETRY_CAP = 1.0
RETRY_FLOOR = 0.05
CLOSE_RETRY = 0.1
LOG_EVERY = 10.0


class DeferredConfirmations(ProcessLocal):
    """A bounded, in-memory queue of confirmations waiting for the store, and the thread
    that applies them. Thread-safe; :meth:`add` never blocks on I/O.

    A tracking id is kept once, however often it is added (a person clicking again while
    the store is down). ``apply`` is called from the background thread only.
    """

    def __init__(self, apply: Apply, *, limit: int) -> None:
        self._apply = apply
        self.limit = limit
        super().__init__()

    def _init_state(self) -> None:
        super()._init_state()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._entries: dict[str, float] = {}  # tracking id -> confirmed at; oldest first
        self._thread: threading.Thread | None = None
        self._deadline: float | None = None  # set by close(): last attempts until then
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._drops = Throttle(LOG_EVERY)
        self._failures = Throttle(LOG_EVERY)

    def add(self, tracking_id: str, confirmed_at: float) -> bool:
        """Keep a confirmation for the background thread; ``False`` when it cannot be kept
        (the buffer is full, or closed): it is counted as ``deferred_dropped`` and logged."""
        self._check_pid()
        with self._lock:
            if tracking_id in self._entries:
                return True
            kept = not self._closed and len(self._entries) < self.limit
            if kept:
                self._entries[tracking_id] = confirmed_at
                if self._thread is None:
                    # Started under the lock, so close() never sees an unstarted thread.
                    self._thread = threading.Thread(
                        target=self._run, name="twilio-feedback-deferred", daemon=True
                    )
                    self._thread.start()
                self._changed.notify_all()
        if not kept:
            self._dropped(tracking_id)
        return kept

    def _dropped(self, tracking_id: str) -> None:
        with self._lock:
            self._counts["deferred_dropped"] += 1
        telemetry.dropped("deferred")
        count = self._drops.hit()
        if count:
            logger.warning(
                "the store is unavailable and the deferred buffer is full "
                "(deferred_size=%d) or closed: %d confirmation(s) answered 'error' (latest %s)",
                self.limit,
                count,
                tracking_id,
                extra={
                    "event": "deferred_dropped",
                    "outcome": "error",
                    "tracking_id": tracking_id,
                    "count": count,
                },
            )
        else:
            logger.debug(
                "confirmation of %s not deferred: buffer full or closed",
                tracking_id,
                extra={"event": "deferred_dropped", "outcome": "error", "tracking_id": tracking_id},
            )

    def stats(self) -> dict[str, int]:
        """``replayed`` (kept confirmations the store took once it answered, whatever it
        found), ``deferred_dropped`` (refused: the buffer was full or closed) and
        ``deferred_pending`` (kept right now)."""
        with self._lock:
            return {**self._counts, "deferred_pending": len(self._entries)}

    def close(self, timeout: float | None = 5.0) -> int:
        """Stop keeping confirmations, apply those kept as far as the store lets within
        ``timeout`` (retrying every 0.1 s while it fails; with ``None``, one attempt), and
        stop the thread. Returns how many were left: they are lost, and a warning says how
        many. Idempotent."""
        started = time.monotonic()
        with self._lock:
            self._closed = True
            thread = self._thread
            limit = float("inf") if timeout is None else timeout
            if self._deadline is None or started + limit < self._deadline:
                self._deadline = started + limit
            self._changed.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if timeout is None else max(0.0, started + timeout - time.monotonic()))
        with self._lock:
            left = len(self._entries)
            self._entries.clear()
        if left:
            logger.warning(
                "%d deferred confirmation(s) could not be applied before close: the store "
                "did not answer; they are lost",
                left,
                extra={"event": "deferred_lost", "count": left},
            )
        return left

    # -- the background thread -----------------------------------------------------------

    def _next(self) -> tuple[str, float] | None:
        with self._lock:
            while not self._entries and self._deadline is None:
                self._changed.wait()
            if not self._entries:
                return None
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return None
            return next(iter(self._entries.items()))

    def _run(self) -> None:
        failures = 0
        while True:
            entry = self._next()
            if entry is None:
                return
            tracking_id, confirmed_at = entry
            try:
                self._apply(tracking_id, confirmed_at)
            except Exception as exc:
                failures += 1
                self._failed(exc, failures)
                delay = backoff(failures, RETRY_BASE, RETRY_CAP, RETRY_FLOOR)
                with self._lock:
                    if self._deadline is None:
                        # New confirmations do not wake it: only close() does.
                        self._changed.wait_for(lambda: self._deadline is not None, delay)
                        continue
                    # Closing: try again briefly apart (a store just back may fail once
                    # on a stale connection) until the deadline; without one, once.
                    remaining = self._deadline - time.monotonic()
                    if remaining == float("inf") or remaining <= CLOSE_RETRY:
                        return
                    self._changed.wait(CLOSE_RETRY)
                continue
            with self._lock:
                self._entries.pop(tracking_id, None)
                self._counts["replayed"] += 1
                waiting = len(self._entries)
            if failures:
                logger.info(
                    "the store answers again: applying %d more deferred confirmation(s)",
                    waiting,
                    extra={"event": "deferred_replay_resumed", "count": waiting},
                )
                failures = 0

    def _failed(self, exc: Exception, failures: int) -> None:
        if not self._failures.hit():
            return
        with self._lock:
            waiting = len(self._entries)
        # The exception's type only: a driver's message may quote the store URL.
        logger.warning(
            "store unavailable (%s): %d confirmation(s) deferred in memory, applied once "
            "it answers (attempt %d)",
            type(exc).__name__,
            waiting,
            failures,
            extra={
                "event": "deferred_replay_failed",
                "error_type": type(exc).__name__,
                "count": waiting,
                "attempt": failures,
            },
        )
