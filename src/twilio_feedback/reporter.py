"""Background delivery of feedback to Twilio.

Worker threads drain a bounded queue, so one design serves WSGI servers (threads, gunicorn
sync/gthread) and ASGI servers (uvicorn) alike, and no request ever waits on Twilio. A
scheduler thread puts due retries back in the queue, replaces workers stuck in a call that
outlived its timeout, and sweeps the store's outbox: ``confirmed`` records that nobody is
reporting (their lease ended: a crash, a restart, a full queue) are claimed and delivered.
Delivery is at least once.
"""

from __future__ import annotations

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
from .records import Record, State

if TYPE_CHECKING:
    from .settings import Settings
    from .stores.base import Store
    from .twilio_api import TwilioAPI

__all__ = ["COUNTERS", "OnFailed", "OnReported", "Reporter", "backoff"]

logger = logging.getLogger("twilio_feedback.reporter")

OnReported = Callable[[Record], None]
"""Called with the record (state ``reported``) once Twilio accepted its feedback."""
OnFailed = Callable[[Record, FeedbackError], None]
"""Called with the record (state ``failed``) and the last error once it is marked failed."""

COUNTERS = ("reported", "retried", "failed", "dropped", "swept", "stuck")
"""The reporter's counters, as :meth:`Reporter.stats` returns them (plus ``pending``)."""

BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0
SWEEP_BATCH = 100
PURGE_EVERY = 300.0
DROP_LOG_EVERY = 10.0
STUCK_FACTOR = 3.0

_live: weakref.WeakSet[Reporter] = weakref.WeakSet()


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 32)))


def _restart_after_fork() -> None:
    for reporter in list(_live):
        reporter._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_after_fork)


class Reporter:
    """Posts ``Outcome=confirmed`` for confirmed records, off the request path.

    :meth:`submit` never blocks. Network errors, 5xx, 408 and 429 are retried with
    exponential backoff and full jitter (Retry-After wins when Twilio sends it) until
    ``settings.retry_window`` has passed since the confirmation; other 4xx mark the record
    ``failed`` with Twilio's code. While a retry waits, the record's store lease is kept so
    other processes' sweeps leave it alone. Forked children (gunicorn ``--preload``) get
    fresh threads and counters.
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
        self._init_state()
        _live.add(self)

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # flush() waits here
        self._wake = threading.Condition(self._lock)  # the scheduler waits here
        self._queue: queue.Queue[Record | None] = queue.Queue(maxsize=self.settings.queue_size)
        self._pending: set[str] = set()  # queued, in flight, or waiting for a retry
        # (due, seq, record, pulled forward on recovery: False when Twilio said when).
        self._retries: list[tuple[float, int, Record, bool]] = []
        self._degraded = False  # a transient failure since the last success
        self._seq = itertools.count()
        self._workers: set[threading.Thread] = set()
        self._busy: dict[threading.Thread, tuple[float, Record]] = {}
        self._abandoned: set[threading.Thread] = set()
        self._scheduler: threading.Thread | None = None
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._unlogged_drops = 0
        self._drop_logged_at = float("-inf")
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers and the scheduler, which sweeps the outbox at once."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            for _ in range(self.settings.reporter_concurrency):
                self._spawn_worker()
            self._scheduler = self._spawn(self._schedule, "twilio-feedback-scheduler")

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _spawn_worker(self) -> None:
        name = f"twilio-feedback-worker-{next(self._seq)}"
        self._workers.add(self._spawn(self._work, name))

    def _after_fork(self) -> None:
        # The parent's threads do not exist here and its locks may have been held
        # mid-operation; what the parent had queued is the parent's to deliver.
        closed = self._closed
        running = self._started and not closed
        self._init_state()
        self._closed = closed
        if running:
            self.start()

    def flush(self, timeout: float | None = 5.0) -> int:
        """Wait up to ``timeout`` seconds until nothing is queued, in flight or waiting for
        a retry; return how many still are. Never waits longer than ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending:
                if deadline is None:
                    self._idle.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(remaining)
            return len(self._pending)

    def close(self, timeout: float | None = 5.0) -> int:
        """Flush up to ``timeout``, then stop the threads. Idempotent. Returns how many
        reports were left pending: they stay ``confirmed`` in the store for a sweep."""
        started = time.monotonic()
        left = self.flush(timeout)
        with self._lock:
            if self._closed:
                return left
            self._closed = True
            threads = [*self._workers, *([self._scheduler] if self._scheduler else [])]
            self._wake.notify_all()
        for _ in range(len(threads)):
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break  # busy workers see the closed flag after their current post
        limit = self.settings.request_timeout if timeout is None else timeout
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, started + limit - time.monotonic()))
        return left

    def stats(self) -> dict[str, int]:
        """Counters since start (or since the fork): reported, retried, failed, dropped,
        swept, stuck, and ``pending`` (queued, in flight or waiting for a retry)."""
        with self._lock:
            return {**self._counts, "pending": len(self._pending)}

    # -- intake ----------------------------------------------------------------------

    def submit(self, record: Record) -> bool:
        """Queue a confirmed record for reporting; never blocks. ``False`` when it could
        not be queued (full queue, closed reporter): it is counted as ``dropped`` and stays
        ``confirmed`` in the store, where the sweep finds it once its lease ends."""
        if self._pid != os.getpid():
            self._after_fork()  # a fork the at-fork hook did not see
        if not self._started:
            self.start()
        with self._lock:
            if record.tracking_id in self._pending:
                return True
            if not self._closed:
                try:
                    self._queue.put_nowait(record)
                except queue.Full:
                    pass
                else:
                    self._pending.add(record.tracking_id)
                    return True
        self._dropped(record)
        return False

    def _dropped(self, record: Record) -> None:
        now = time.monotonic()
        count = 0
        with self._lock:
            self._counts["dropped"] += 1
            self._unlogged_drops += 1
            if now - self._drop_logged_at >= DROP_LOG_EVERY:
                count, self._unlogged_drops, self._drop_logged_at = self._unlogged_drops, 0, now
        if count:
            logger.warning(
                "feedback queue full or closed: %d confirmation(s) (latest %s) left in the "
                "store for the outbox sweep",
                count,
                record.tracking_id,
            )
        else:
            logger.debug("feedback for %s not queued; left for the sweep", record.tracking_id)

    def _done(self, record: Record, counter: str | None = None) -> None:
        with self._lock:
            if counter:
                self._counts[counter] += 1
            # A worker the watchdog gave up on no longer owns the pending entry.
            if threading.current_thread() not in self._abandoned:
                self._pending.discard(record.tracking_id)
            self._idle.notify_all()

    # -- workers ---------------------------------------------------------------------

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            record = self._queue.get()
            if record is None or self._closed:
                return
            with self._lock:
                self._busy[me] = (time.monotonic(), record)
            try:
                self._deliver(record)
            except Exception:
                # The store failed while recording the outcome: the lease runs out and the
                # sweep tries again. A worker never dies of it.
                logger.exception("could not record the outcome for %s", record.tracking_id)
                self._done(record)
            with self._lock:
                del self._busy[me]
                abandoned = me in self._abandoned
                self._abandoned.discard(me)
            if abandoned:
                return

    def _deliver(self, record: Record) -> None:
        if record.message_sid is None:
            self._done(record)  # reported once send() attaches the SID
            return
        account = str(record.account_sid or self.settings.account_sid)
        try:
            self.api.post_feedback(account, record.message_sid)
        except FeedbackError as exc:
            self._retry_or_fail(record, exc)
            return
        self.store.mark_reported(record.tracking_id)
        logger.debug("feedback reported for %s", record.message_sid)
        self._done(record, "reported")
        if self._degraded:
            self._recovered()
        self._hook(self.on_reported, record.replace(state=State.REPORTED, lease_until=0.0))

    def _retry_or_fail(self, record: Record, exc: FeedbackError) -> None:
        s = self.settings
        now = time.time()
        attempts = record.attempts + 1
        window_end = (record.confirmed_at or record.created_at or now) + s.retry_window
        if exc.retry_after is not None:
            delay = exc.retry_after
        else:
            delay = min(backoff(attempts), max(0.0, window_end - now))
        if not exc.retryable or now >= window_end or now + delay > window_end:
            self._fail(record, exc, attempts)
            return
        with self._lock:
            # Short waits stay in memory (bounded); longer ones are left to the sweep.
            keep = (
                delay <= s.lease_seconds
                and len(self._retries) < s.queue_size
                and not self._closed
                and threading.current_thread() not in self._abandoned
            )
        retry_at = now + delay
        # Hold the lease past the retry so other processes' sweeps leave the record alone.
        self.store.defer(
            record.tracking_id,
            lease_until=retry_at + (s.lease_seconds if keep else 0.0),
            attempts=attempts,
            code=exc.code,
            message=exc.message,
        )
        logger.info(
            "feedback for %s failed (%s); retry %d in %.1fs%s",
            record.message_sid,
            exc.message,
            attempts,
            delay,
            "" if keep else " by the outbox sweep",
        )
        retry = record.replace(attempts=attempts, error_code=exc.code, error_message=exc.message)
        with self._lock:
            self._counts["retried"] += 1
            if keep:
                self._degraded = True
                heapq.heappush(
                    self._retries,
                    (time.monotonic() + delay, next(self._seq), retry, exc.retry_after is None),
                )
                self._wake.notify()
                return
        self._done(record)

    def _recovered(self) -> None:
        """Twilio answers again: retries still backing off from the outage are due now,
        so a backlog drains at full concurrency instead of as its jittered backoffs
        (up to a minute) come due. Retries Twilio itself timed (Retry-After) keep theirs."""
        with self._lock:
            if not self._degraded:
                return
            self._degraded = False
            now = time.monotonic()
            self._retries = [
                (now if pull else due, seq, record, pull)
                for due, seq, record, pull in self._retries
            ]
            heapq.heapify(self._retries)
            self._wake.notify()

    def _fail(self, record: Record, exc: FeedbackError, attempts: int) -> None:
        self.store.mark_failed(record.tracking_id, code=exc.code, message=exc.message)
        logger.warning(
            "feedback for %s failed for good after %d attempt(s): %s",
            record.message_sid,
            attempts,
            exc.message,
        )
        self._done(record, "failed")
        failed = record.replace(
            state=State.FAILED,
            lease_until=0.0,
            attempts=attempts,
            error_code=exc.code,
            error_message=exc.message,
        )
        self._hook(self.on_failed, failed, exc)

    def _hook(self, hook: Callable[..., None] | None, *args: object) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            logger.exception("twilio-feedback hook %s raised", getattr(hook, "__name__", hook))

    # -- scheduler: retries, stuck workers, the outbox sweep --------------------------

    def _schedule(self) -> None:
        s = self.settings
        now = time.monotonic()
        next_sweep, next_purge, next_watch = now, now, now + s.request_timeout
        while True:
            with self._lock:
                while not self._closed:
                    now = time.monotonic()
                    due = min(next_sweep, next_purge, next_watch)
                    if self._retries:
                        due = min(due, self._retries[0][0])
                    if due <= now:
                        break
                    self._wake.wait(due - now)
                if self._closed:
                    return
                ready = []
                while self._retries and self._retries[0][0] <= now:
                    ready.append(heapq.heappop(self._retries)[2])
            for record in ready:
                self._requeue(record)
            if now >= next_watch:
                next_watch = now + s.request_timeout
                self._watch(now)
            if now >= next_sweep:
                self._guard("outbox sweep", self._sweep)
                next_sweep = time.monotonic() + s.sweep_interval
            if now >= next_purge:
                self._guard("purge", lambda: self.store.purge(now=time.time()))
                next_purge = time.monotonic() + PURGE_EVERY

    def _guard(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as exc:
            logger.warning("%s failed: %s", what, type(exc).__name__)

    def _requeue(self, record: Record) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            # Its lease ends lease_seconds after the retry time; then the sweep takes it.
            self._done(record)
            self._dropped(record)

    def _watch(self, now: float) -> None:
        """Replace workers stuck in one post far past the request timeout (a server that
        trickles bytes, a hanging DNS lookup): the timeout bounds each socket read, not
        the whole call."""
        limit = STUCK_FACTOR * self.settings.request_timeout + 1.0
        concurrency = self.settings.reporter_concurrency
        with self._lock:
            stuck = [
                (thread, since, record)
                for thread, (since, record) in self._busy.items()
                if now - since > limit and thread not in self._abandoned
            ]
            for thread, _, record in stuck:
                self._abandoned.add(thread)
                self._workers.discard(thread)
                self._pending.discard(record.tracking_id)
                self._counts["stuck"] += 1
            self._workers = {t for t in self._workers if t.is_alive()}
            # At most `concurrency` abandoned threads at once, so a dead network cannot
            # make the thread count grow without bound.
            while len(self._workers) < concurrency and len(self._abandoned) <= concurrency:
                self._spawn_worker()
            if stuck:
                self._idle.notify_all()
        for _, since, record in stuck:
            logger.warning(
                "feedback post for %s has run %.0fs (timeout %.0fs); a new worker takes "
                "over and the record waits in the store for the sweep",
                record.message_sid,
                now - since,
                self.settings.request_timeout,
            )

    def _sweep(self) -> None:
        s = self.settings
        while True:
            with self._lock:
                if self._closed:
                    return
                room = min(SWEEP_BATCH, s.queue_size - self._queue.qsize())
            if room <= 0:
                return
            now = time.time()
            claimed = self.store.claim(now=now, lease_until=now + s.lease_seconds, limit=room)
            taken = 0
            for record in claimed:
                with self._lock:
                    if record.tracking_id in self._pending:
                        continue
                    try:
                        self._queue.put_nowait(record)
                    except queue.Full:
                        continue  # its new lease runs out and a later sweep takes it
                    self._pending.add(record.tracking_id)
                    self._counts["swept"] += 1
                    taken += 1
            if taken:
                logger.info("outbox sweep took %d unreported confirmation(s)", taken)
            if len(claimed) < room:
                return
