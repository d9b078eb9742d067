"""Background delivery of feedback to Twilio.

Worker threads drain a bounded queue, so one design serves WSGI apps (threads, gunicorn
sync/gthread) and ASGI apps (uvicorn) alike and nothing ever waits on Twilio in a request.
A scheduler thread moves due retries back into the queue and sweeps the store's outbox:
``confirmed`` records that nobody is reporting (their lease ran out: a crash, a restart,
a full queue) are claimed and delivered. Delivery is at least once.
"""

from __future__ import annotations

import atexit
import heapq
import itertools
import logging
import os
import queue
import random
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import FeedbackError
from .records import Record

if TYPE_CHECKING:
    from .settings import Settings
    from .stores.base import Store
    from .twilio_api import TwilioAPI

__all__ = ["OnFailed", "OnReported", "Reporter"]

logger = logging.getLogger("twilio_feedback.reporter")

OnReported = Callable[[Record], None]
"""Called with a record once Twilio accepted its feedback."""
OnFailed = Callable[[Record, FeedbackError], None]
"""Called with a record and the error once it is marked failed."""

BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0
SWEEP_BATCH = 100
PURGE_EVERY = 300.0


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 32)))


class Reporter:
    """Posts ``Outcome=confirmed`` for confirmed records, off the request path.

    :meth:`submit` never blocks. Retryable failures (network, 5xx, 408, 429) are retried
    with backoff and Retry-After until ``settings.retry_window`` has passed since the
    confirmation; permanent ones mark the record ``failed`` with Twilio's code. Forked
    children (gunicorn ``--preload``) get fresh threads.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        api: TwilioAPI,
        *,
        on_reported: OnReported | None = None,
        on_failed: OnFailed | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.api = api
        self.on_reported = on_reported
        self.on_failed = on_failed
        self._counts = dict.fromkeys(("reported", "retried", "failed", "dropped", "swept"), 0)
        self._init_state()
        me = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _call(me, "_after_fork"))
        atexit.register(_call, me, "_at_exit")

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._queue: queue.Queue[Record | None] = queue.Queue(maxsize=self.settings.queue_size)
        self._pending: set[str] = set()
        self._retries: list[tuple[float, int, Record]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._started = False
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers and the scheduler (which sweeps the outbox at once)."""
        with self._cond:
            if self._started or self._stopping:
                return
            self._started = True
            for n in range(self.settings.reporter_concurrency):
                self._spawn(self._work, f"twilio-feedback-worker-{n}")
            self._spawn(self._schedule, "twilio-feedback-scheduler")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _after_fork(self) -> None:
        # The parent's threads do not exist in the child, and its locks may be held.
        was_running = self._started and not self._stopping
        self._init_state()
        if was_running:
            self.start()

    def _at_exit(self) -> None:
        self.close(timeout=2.0)

    def flush(self, timeout: float | None = 5.0) -> int:
        """Wait up to ``timeout`` seconds until nothing is queued, in flight or waiting to
        be retried; return how many still are. Never waits longer than ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            return len(self._pending)

    def close(self, timeout: float | None = 5.0) -> int:
        """Flush up to ``timeout``, then stop the threads. Idempotent. Returns how many
        reports were left pending: they stay ``confirmed`` in the store for the sweep."""
        if os.getpid() != self._pid:
            return 0
        left = self.flush(timeout)
        with self._cond:
            if self._stopping:
                return left
            self._stopping = True
            self._cond.notify_all()
        for _ in range(self.settings.reporter_concurrency):
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break  # workers are daemon threads; they die with the process
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(0.2)
        return left

    def stats(self) -> dict[str, int]:
        """Counters since start: reported, retried, failed, dropped, swept, and pending."""
        with self._cond:
            return {**self._counts, "pending": len(self._pending)}

    # -- intake ----------------------------------------------------------------------

    def submit(self, record: Record) -> bool:
        """Queue a confirmed record for reporting; never blocks. ``False`` when the queue
        is full: the record stays ``confirmed`` in the store and the sweep delivers it."""
        if os.getpid() != self._pid:
            self._after_fork()
        self.start()
        with self._cond:
            if record.tracking_id in self._pending:
                return True
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._counts["dropped"] += 1
                logger.warning(
                    "feedback queue full (%d); %s stays in the store for the sweep",
                    self.settings.queue_size,
                    record.tracking_id,
                )
                return False
            self._pending.add(record.tracking_id)
        return True

    def _done(self, record: Record, counter: str | None = None) -> None:
        with self._cond:
            if counter:
                self._counts[counter] += 1
            self._pending.discard(record.tracking_id)
            self._cond.notify_all()

    # -- workers ---------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            record = self._queue.get()
            if record is None:
                return
            try:
                self._deliver(record)
            except Exception:
                # The store failed while recording the outcome; the lease will expire
                # and the sweep tries again. Never let a worker die.
                logger.exception("could not record the outcome for %s", record.tracking_id)
                self._done(record)

    def _deliver(self, record: Record) -> None:
        account = record.account_sid or self.settings.account_sid
        if record.message_sid is None or account is None:
            self._done(record)
            return
        try:
            self.api.post_feedback(account, record.message_sid)
        except FeedbackError as exc:
            self._failed_attempt(record, exc)
            return
        self.store.mark_reported(record.tracking_id)
        self._done(record, "reported")
        self._hook(self.on_reported, record)

    def _failed_attempt(self, record: Record, exc: FeedbackError) -> None:
        attempts = record.attempts + 1
        now = time.time()
        confirmed_at = record.confirmed_at or now
        if exc.retryable and now - confirmed_at < self.settings.retry_window:
            delay = exc.retry_after if exc.retry_after is not None else backoff(attempts)
            logger.info(
                "feedback for %s failed (%s); retry %d in %.1fs",
                record.message_sid,
                exc.message,
                attempts,
                delay,
            )
            # Keep the lease past the retry so other processes' sweeps leave it alone.
            self.store.defer(
                record.tracking_id,
                lease_until=now + delay + self.settings.lease_seconds,
                attempts=attempts,
                code=exc.code,
                message=exc.message,
            )
            with self._cond:
                self._counts["retried"] += 1
                heapq.heappush(
                    self._retries,
                    (
                        time.monotonic() + delay,
                        next(self._seq),
                        record.replace(attempts=attempts),
                    ),
                )
                self._cond.notify_all()
            return
        logger.warning("feedback for %s failed for good: %s", record.message_sid, exc.message)
        self.store.mark_failed(record.tracking_id, code=exc.code, message=exc.message)
        self._done(record, "failed")
        self._hook(self.on_failed, record, exc)

    def _hook(self, hook: Callable[..., None] | None, *args: object) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            logger.exception("twilio-feedback hook %r raised", hook)

    # -- scheduler: retries and the outbox sweep -------------------------------------

    def _schedule(self) -> None:
        next_sweep = time.monotonic()
        next_purge = time.monotonic() + PURGE_EVERY
        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    due = min(next_sweep, self._retries[0][0] if self._retries else next_sweep)
                    if due <= now:
                        break
                    self._cond.wait(due - now)
                if self._stopping:
                    return
                ready = []
                while self._retries and self._retries[0][0] <= time.monotonic():
                    ready.append(heapq.heappop(self._retries)[2])
            for record in ready:
                self._requeue(record)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + self.settings.sweep_interval
                self._guard(self._sweep)
            if now >= next_purge:
                next_purge = now + PURGE_EVERY
                self._guard(lambda: self.store.purge(now=time.time()))

    def _guard(self, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:
            logger.warning("outbox sweep failed: %s", type(exc).__name__)

    def _requeue(self, record: Record) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._cond:
                heapq.heappush(self._retries, (time.monotonic() + 1.0, next(self._seq), record))

    def _sweep(self) -> None:
        while not self._stopping:
            room = self.settings.queue_size - self._queue.qsize()
            if room <= 0:
                return
            now = time.time()
            claimed = self.store.claim(
                now=now,
                lease_until=now + self.settings.lease_seconds,
                limit=min(SWEEP_BATCH, room),
            )
            for record in claimed:
                with self._cond:
                    if record.tracking_id in self._pending:
                        continue
                    self._pending.add(record.tracking_id)
                    self._counts["swept"] += 1
                try:
                    self._queue.put_nowait(record)
                except queue.Full:
                    self._done(record)  # its lease expires and a later sweep takes it
            if len(claimed) < min(SWEEP_BATCH, room):
                return


def _call(ref: weakref.ref[Reporter], method: str) -> None:
    reporter = ref()
    if reporter is not None:
        getattr(reporter, method)()
