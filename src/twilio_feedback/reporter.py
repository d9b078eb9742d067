"""Background delivery of feedback to Twilio.

This module is the runtime: threads, queues, leases. When to retry is
:mod:`twilio_feedback.retry`'s to say. Worker threads drain a bounded queue, so one design
serves WSGI servers (threads, gunicorn sync/gthread) and ASGI servers (uvicorn) alike, and
no request ever waits on Twilio. A scheduler thread puts due retries back in the queue,
replaces workers stuck in a call that outlived its timeout, and sweeps the store's outbox:
``confirmed`` records that nobody is reporting (their lease ended: a crash, a restart, a
full queue) are claimed and delivered.
A heartbeat thread renews, in one store call, the short leases of every record this
process holds (queued, in flight, waiting for a retry), so a live process keeps its own
records however slow Twilio is, and a dead one's are taken over within
``lease_seconds + sweep_interval``. An outcome the store cannot take (it is down just when
Twilio answered) stays held here and is written by a later heartbeat, so the feedback is
not posted twice. Delivery is at least once.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from . import telemetry
from .errors import FeedbackError, StorageError
from .lifecycle import ProcessLocal, Throttle
from .records import Record, State
from .retry import BACKOFF_CAP, Fail, RetryPolicy

if TYPE_CHECKING:
    from .settings import Settings
    from .stores.base import Store
    from .twilio_api import TwilioAPI

__all__ = [
    "ABANDONED_PER_WORKER",
    "COUNTERS",
    "HEARTBEATS_PER_LEASE",
    "HOLD_LIMIT",
    "SWEEP_BATCH",
    "DrainProgress",
    "Drained",
    "OnFailed",
    "OnReported",
    "Reporter",
]

logger = logging.getLogger("twilio_feedback.reporter")

OnReported = Callable[[Record], None]
"""Called with the record (state ``reported``) once Twilio accepted its feedback."""
OnFailed = Callable[[Record, FeedbackError], None]
"""Called with the record (state ``failed``) and the last error once it is marked failed."""

COUNTERS = ("reported", "retried", "failed", "dropped", "swept", "stuck")
"""The reporter's counters, as :meth:`Reporter.stats` returns them (plus ``pending``)."""

HOLD_LIMIT = BACKOFF_CAP
"""Retries due within this many seconds wait in memory, their leases renewed by the
heartbeat; later ones (a long Retry-After) wait in the store, due at their time."""
HEARTBEATS_PER_LEASE = 3
"""The heartbeat renews leases every ``lease_seconds / 3``: two renewals in a row can fail
(a store blip) before a live process's lease runs out."""
ABANDONED_PER_WORKER = 4
"""At most ``4 * reporter_concurrency`` workers given up by the watchdog exist at once."""
SWEEP_BATCH = 100
"""Records one claim takes from the store, at most (the sweep repeats while it fills them)."""
PURGE_EVERY = 300.0
DROP_LOG_EVERY = 10.0
CREDENTIALS_LOG_EVERY = 60.0
STUCK_FACTOR = 3.0

_Key: TypeAlias = "tuple[str, str | None]"
# (due, seq, record, pull forward on recovery: True for any success, an account SID for
# a success on that account (rejected credentials), False when Twilio said when).
_Retry: TypeAlias = "tuple[float, int, Record, bool | str]"

DrainProgress = Callable[[int, int, int], None]
"""Called by :meth:`Reporter.drain` with ``(done, taken, failed)`` as reports complete."""


@dataclass(frozen=True, slots=True)
class Drained:
    """What one :meth:`Reporter.drain` did: records ``taken`` from the store, and of them
    ``reported``, ``failed`` and ``left`` (still pending when the timeout passed)."""

    taken: int
    reported: int
    failed: int
    left: int


def _key(record: Record) -> _Key:
    return record.tracking_id, record.message_sid


class Reporter(ProcessLocal):
    """Posts ``Outcome=confirmed`` for confirmed records, off the request path.

    :meth:`submit` never blocks. Failed posts are retried as
    :class:`~twilio_feedback.retry.RetryPolicy` says, until ``settings.retry_window`` has
    passed since the confirmation; rejected credentials (401, 403) get one ERROR line a
    minute saying what to fix; a permanent refusal marks the record ``failed`` with
    Twilio's code. Every record this process holds keeps a short store lease that a
    heartbeat renews, so other processes' sweeps leave it alone while this one lives.
    Every store update names the record's message SID: a key bound again meanwhile keeps
    its new record. Forked children (gunicorn ``--preload``) get fresh threads and counters.
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
        self.policy = RetryPolicy(settings.retry_window)
        super().__init__()
        telemetry.watch(self)

    def _init_state(self) -> None:
        super()._init_state()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # flush() waits here
        self._wake = threading.Condition(self._lock)  # the scheduler waits here
        self._beat = threading.Condition(self._lock)  # the heartbeat waits here
        self._sweeping = threading.Lock()  # one sweep at a time: claim, then hold
        self._queue: queue.Queue[Record | None] = queue.Queue(maxsize=self.settings.queue_size)
        # What this process holds, by (tracking id, message SID): queued, in flight, or
        # waiting for a retry. The heartbeat renews their leases.
        self._held: dict[_Key, Record] = {}
        # Outcomes Twilio gave that the store could not take yet, by held record: the
        # record, the store method's name and its keyword arguments. The heartbeat writes
        # them.
        self._unwritten: dict[_Key, tuple[Record, str, dict[str, Any]]] = {}
        self._retries: list[_Retry] = []
        self._degraded = False  # a retry may be pulled forward when Twilio answers again
        self._seq = itertools.count()
        self._workers: set[threading.Thread] = set()
        self._busy: dict[threading.Thread, tuple[float, Record]] = {}
        self._abandoned: set[threading.Thread] = set()
        self._at_bound_logged = False
        self._threads: list[threading.Thread] = []
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._drops = Throttle(DROP_LOG_EVERY)
        self._refusals = Throttle(CREDENTIALS_LOG_EVERY)
        self._started = False
        self._releasing = False  # close(release=True): nothing new is started
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers, the heartbeat and the scheduler, which sweeps the outbox at
        once."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            for _ in range(self.settings.reporter_concurrency):
                self._spawn_worker()
            self._threads = [
                self._spawn(self._schedule, "twilio-feedback-scheduler"),
                self._spawn(self._heartbeat, "twilio-feedback-heartbeat"),
            ]

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _spawn_worker(self) -> None:
        name = f"twilio-feedback-worker-{next(self._seq)}"
        self._workers.add(self._spawn(self._work, name))

    def _restartable(self) -> bool:
        return self._started

    def _restart(self) -> None:
        self.start()  # in a forked child: fresh threads, an empty queue

    def flush(self, timeout: float | None = 5.0) -> int:
        """Wait up to ``timeout`` seconds until nothing is queued, in flight or waiting for
        a retry; return how many still are. Never waits longer than ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._held:
                if deadline is None:
                    self._idle.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._idle.wait(remaining)
            return len(self._held)

    def close(self, timeout: float | None = 5.0, *, release: bool = False) -> int:
        """Flush up to ``timeout``, then stop the threads. Idempotent. Returns how many
        reports were left pending: they stay ``confirmed`` in the store, and their leases,
        no longer renewed, end within ``lease_seconds`` for another process's sweep.

        With ``release``, only the posts in flight are finished: records still queued are
        handed back to the store at once (their lease ended, for any process's next
        sweep), and retries waiting in memory with their lease set to their retry time.
        A delivery process that is told to stop does this.
        """
        started = time.monotonic()
        if release:
            self._release_waiting()
        left = self.flush(timeout)
        with self._lock:
            if self._closed:
                return left
            self._closed = True
            threads = [*self._workers, *self._threads]
            self._wake.notify_all()
            self._beat.notify_all()
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

    def _release_waiting(self) -> None:
        """Stop starting posts; hand what waits (queued, retrying) back to the store."""
        now_wall, now = time.time(), time.monotonic()
        with self._lock:
            if self._closed or self._releasing:
                return
            self._releasing = True
            waiting = [
                (record, now_wall + max(0.0, due - now)) for due, _, record, _ in self._retries
            ]
            self._retries = []
        while True:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
                break
            if record is not None:
                waiting.append((record, now_wall))
        for record, lease_until in waiting:
            self._release(record, lease_until)
        if waiting:
            logger.info(
                "%d unposted confirmation(s) handed back to the store",
                len(waiting),
                extra={"event": "reports_released", "count": len(waiting)},
            )

    def _release(self, record: Record, lease_until: float) -> None:
        """Hand a record this process holds back to the store: its lease ends at
        ``lease_until``, its attempts and last error are kept."""
        if record.message_sid is not None:
            self._guard(
                "releasing a record",
                functools.partial(
                    self.store.defer,
                    record.tracking_id,
                    record.message_sid,
                    lease_until=lease_until,
                    attempts=record.attempts,
                    code=record.error_code,
                    message=record.error_message,
                ),
            )
        self._done(record)

    def stats(self) -> dict[str, int]:
        """Counters since start (or since the fork): reported, retried, failed, dropped,
        swept, stuck, and ``pending`` (queued, in flight or waiting for a retry)."""
        with self._lock:
            return {**self._counts, "pending": len(self._held)}

    # -- intake ----------------------------------------------------------------------

    def submit(self, record: Record) -> bool:
        """Queue a confirmed record for reporting; never blocks. ``False`` when it could
        not be queued (full queue, closed reporter): it is counted as ``dropped`` and stays
        ``confirmed`` in the store, where the sweep finds it once its lease ends."""
        self._check_pid()
        if not self._started:
            self.start()
        key = _key(record)
        with self._lock:
            if key in self._held:
                return True
            if not (self._closed or self._releasing):
                try:
                    self._queue.put_nowait(record)
                except queue.Full:
                    pass
                else:
                    self._held[key] = record
                    return True
        self._dropped(record)
        return False

    def _dropped(self, record: Record) -> None:
        with self._lock:
            self._counts["dropped"] += 1
        telemetry.dropped("reports")
        count = self._drops.hit()
        if count:
            logger.warning(
                "feedback queue full or closed: %d confirmation(s) (latest %s) left in the "
                "store for the outbox sweep",
                count,
                record.tracking_id,
                extra={
                    "event": "report_dropped",
                    "tracking_id": record.tracking_id,
                    "message_sid": record.message_sid,
                    "count": count,
                },
            )
        else:
            logger.debug(
                "feedback for %s not queued; left for the sweep",
                record.tracking_id,
                extra={
                    "event": "report_dropped",
                    "tracking_id": record.tracking_id,
                    "message_sid": record.message_sid,
                },
            )

    def _done(self, record: Record, counter: str | None = None) -> None:
        with self._lock:
            if counter:
                self._counts[counter] += 1
            # A worker the watchdog gave up on no longer holds the record (a sweep may
            # have handed it to this process again since).
            if threading.current_thread() not in self._abandoned:
                self._held.pop(_key(record), None)
            if not self._held:  # flush() waits for nothing held: wake it then, only
                self._idle.notify_all()

    def _given_up(self) -> bool:
        with self._lock:
            return threading.current_thread() in self._abandoned

    # -- workers ---------------------------------------------------------------------

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            record = self._queue.get()
            if record is None or self._closed:
                return
            with self._lock:
                releasing = self._releasing
                if not releasing:
                    self._busy[me] = (time.monotonic(), record)
            if releasing:
                self._release(record, time.time())
                continue

            try:
                self._deliver(record)
            except Exception:
                # A bug (a hook, a store returning nonsense): the record's lease runs out
                # and a sweep tries again. A worker never dies of it.
                logger.exception(
                    "delivering the feedback for %s failed",
                    record.tracking_id,
                    extra={
                        "event": "report_error",
                        "tracking_id": record.tracking_id,
                        "message_sid": record.message_sid,
                    },
                )
                self._done(record)
            with self._lock:
                del self._busy[me]
                abandoned = me in self._abandoned
                self._abandoned.discard(me)
            if abandoned:
                return

    def _deliver(self, record: Record) -> None:
        sid = record.message_sid
        if sid is None:
            self._done(record)  # reported once send() attaches the SID
            return
        account = str(record.account_sid or self.settings.account_sid)
        try:
            self.api.post_feedback(account, sid)
        except FeedbackError as exc:
            self._retry_or_fail(record, sid, account, exc)
            return
        logger.debug(
            "feedback reported for %s",
            sid,
            extra={
                "event": "report_accepted",
                "tracking_id": record.tracking_id,
                "message_sid": sid,
                "attempt": record.attempts + 1,
            },
        )
        telemetry.reported()
        self._outcome(record, "reported", "mark_reported", {})
        if self._degraded:  # read without the lock: a stale answer only delays a pull
            self._recovered(account)
        if self.on_reported is not None:
            self._hook(self.on_reported, record.replace(state=State.REPORTED, lease_until=0.0))

    def _outcome(self, record: Record, counter: str, method: str, kwargs: dict[str, Any]) -> None:
        """Write what Twilio said to the store. If the store fails, the record stays held
        (its lease renewed) and a later heartbeat writes it: the post is not repeated."""
        try:
            written = getattr(self.store, method)(record.tracking_id, record.message_sid, **kwargs)
        except Exception as exc:
            logger.debug(
                "recording %s for %s failed: %s",
                counter,
                record.tracking_id,
                exc,
                extra={
                    "event": "report_outcome_unwritten",
                    "tracking_id": record.tracking_id,
                    "message_sid": record.message_sid,
                    "outcome": counter,
                },
            )
            with self._lock:
                self._counts[counter] += 1
                if threading.current_thread() not in self._abandoned and not self._closed:
                    self._unwritten[_key(record)] = (record, method, kwargs)
                    return
            self._done(record)
            return
        if not written:
            logger.debug(
                "feedback for %s %s; its record had moved on",
                record.message_sid,
                counter,
                extra={
                    "event": "report_outcome_stale",
                    "tracking_id": record.tracking_id,
                    "message_sid": record.message_sid,
                    "outcome": counter,
                },
            )
        self._done(record, counter)

    def _retry_or_fail(self, record: Record, sid: str, account: str, exc: FeedbackError) -> None:
        if self._given_up():
            # The watchdog gave up on this post: the record waits in the store for a
            # sweep, which may have taken it already. Leave it to that.
            self._done(record)
            return
        s = self.settings
        now = time.time()
        attempts = record.attempts + 1
        if exc.credentials:
            self._credentials_refused(account, exc)
        window_end = self.policy.window_end(record.confirmed_at, record.created_at, now)
        decision = self.policy.decide(
            exc, attempts=attempts, account=account, now=now, window_end=window_end
        )
        if isinstance(decision, Fail):
            self._fail(record, exc, attempts)
            return
        delay = decision.delay
        with self._lock:
            room = len(self._retries) < s.queue_size and not (self._closed or self._releasing)
        hold = room and delay <= HOLD_LIMIT
        # Held in memory: a lease the heartbeat renews. Released: due at its retry time.
        lease_until = now + (s.lease_seconds if hold else delay)
        try:
            applied = self.store.defer(
                record.tracking_id,
                sid,
                lease_until=lease_until,
                attempts=attempts,
                code=exc.code,
                message=exc.message,
            )
        except Exception as exc2:
            # The store is down too: memory is the only place this retry can wait now.
            logger.debug(
                "deferring the report of %s failed: %s",
                record.tracking_id,
                exc2,
                extra={
                    "event": "report_defer_failed",
                    "tracking_id": record.tracking_id,
                    "message_sid": sid,
                },
            )
            applied = False
        if not applied:
            # The store no longer has this confirmation (its key was bound to another
            # message), or cannot be reached: the retry waits in memory.
            hold = room
        logger.info(
            "feedback for %s failed (%s); retry %d in %.1fs%s",
            sid,
            exc.message,
            attempts,
            delay,
            "" if hold else " by the outbox sweep",
            extra={
                "event": "report_retry",
                "tracking_id": record.tracking_id,
                "message_sid": sid,
                "attempt": attempts,
                "twilio_code": exc.code,
                "http_status": exc.status,
                "reason": telemetry.error_type(exc),
                "retry_in": round(delay, 3),
            },
        )
        retry = record.replace(attempts=attempts, error_code=exc.code, error_message=exc.message)
        telemetry.retried(exc)
        with self._lock:
            self._counts["retried"] += 1
            if hold and not (self._closed or self._releasing):
                self._degraded = self._degraded or decision.pull is not False
                heapq.heappush(
                    self._retries,
                    (time.monotonic() + delay, next(self._seq), retry, decision.pull),
                )
                self._wake.notify()
                return
        if not applied:
            logger.warning(
                "feedback for %s dropped: its record was bound to another message or the "
                "store is unavailable, and no retry can wait in memory",
                sid,
                extra={
                    "event": "report_retry_dropped",
                    "tracking_id": record.tracking_id,
                    "message_sid": sid,
                    "attempt": attempts,
                },
            )
        self._done(record)

    def _credentials_refused(self, account: str, exc: FeedbackError) -> None:
        """One ERROR line a minute, not one per record, saying what to fix."""
        count = self._refusals.hit()
        if not count:
            return
        s = self.settings
        using = f"API key {s.api_key_sid}" if s.api_key_sid else f"account {s.account_sid}"
        if self.api.given is not None:
            using = "the twilio.rest.Client given to the tracker"
        logger.error(
            "Twilio refused the credentials for account %s (%s): check TWILIO_ACCOUNT_SID "
            "and TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET (in use: %s). "
            "%d report(s) refused since the last such message stay confirmed and are "
            "retried about every %.0fs until their retry window ends",
            account,
            exc.message,
            using,
            count,
            BACKOFF_CAP,
            extra={
                "event": "credentials_refused",
                "account_sid": account,
                "twilio_code": exc.code,
                "http_status": exc.status,
                "count": count,
            },
        )

    def _recovered(self, account: str) -> None:
        """Twilio answers again: retries still backing off from the outage are due now,
        so a backlog drains at full concurrency instead of as its jittered backoffs
        (up to a minute) come due. Retries Twilio itself timed (Retry-After) keep theirs;
        those refused for credentials are pulled forward by a success on their account."""
        with self._lock:
            if not self._degraded:
                return
            now = time.monotonic()
            retries: list[_Retry] = []
            for due, seq, record, pull in self._retries:
                if pull is True or pull == account:
                    due, pull = now, False
                retries.append((due, seq, record, pull))
            heapq.heapify(retries)
            self._retries = retries
            self._degraded = any(pull is not False for *_, pull in retries)
            self._wake.notify()

    def _fail(self, record: Record, exc: FeedbackError, attempts: int) -> None:
        telemetry.failed(exc)
        logger.warning(
            "feedback for %s failed for good after %d attempt(s): %s",
            record.message_sid,
            attempts,
            exc.message,
            extra={
                "event": "report_failed",
                "tracking_id": record.tracking_id,
                "message_sid": record.message_sid,
                "outcome": "failed",
                "attempt": attempts,
                "twilio_code": exc.code,
                "http_status": exc.status,
                "reason": "retry_window" if exc.retryable else "refused",
            },
        )
        self._outcome(record, "failed", "mark_failed", {"code": exc.code, "message": exc.message})
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
            name = getattr(hook, "__name__", repr(hook))
            logger.exception(
                "twilio-feedback hook %s raised", name, extra={"event": "hook_failed", "hook": name}
            )

    # -- the heartbeat -------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Renew the leases of every record held here, in one store call, every
        ``lease_seconds / 3``: the owner's lease never ends while it lives, and ends at most
        ``lease_seconds`` after it dies. Then write the outcomes the store could not take
        when Twilio gave them."""
        s = self.settings
        interval = s.lease_seconds / HEARTBEATS_PER_LEASE
        next_beat = time.monotonic() + interval
        while True:
            with self._lock:
                while not self._closed and (wait := next_beat - time.monotonic()) > 0:
                    self._beat.wait(wait)
                if self._closed:
                    return
                held = [(tid, sid) for tid, sid in self._held if sid is not None]
                unwritten = list(self._unwritten.values())
            next_beat = time.monotonic() + interval
            if held:
                renew = functools.partial(
                    self.store.renew, held, lease_until=time.time() + s.lease_seconds
                )
                if not self._guard("lease renewal", renew):
                    continue  # the store is down: the outcomes wait for the next beat
            for record, method, kwargs in unwritten:
                write = functools.partial(
                    getattr(self.store, method), record.tracking_id, record.message_sid, **kwargs
                )
                if not self._guard(f"recording an outcome ({method})", write):
                    break
                with self._lock:
                    self._unwritten.pop(_key(record), None)
                self._done(record)

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
                self._guard("outbox sweep", self.sweep)
                next_sweep = time.monotonic() + s.sweep_interval
            if now >= next_purge:
                self._guard("purge", lambda: self.store.purge(now=time.time()))
                next_purge = time.monotonic() + PURGE_EVERY

    def _guard(self, what: str, action: Callable[[], object]) -> bool:
        try:
            action()
        except StorageError:
            # The boundary said so.
            logger.debug(
                "%s failed: the store is unavailable",
                what,
                extra={"event": "reporter_task_failed", "task": what, "reason": "store"},
            )
            return False
        except Exception:
            logger.exception(
                "%s failed",
                what,
                extra={"event": "reporter_task_failed", "task": what, "reason": "bug"},
            )
            return False
        return True

    def _requeue(self, record: Record) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            # No longer held: its lease, last renewed at most lease_seconds ago, runs out
            # and a sweep takes it.
            self._done(record)
            self._dropped(record)

    def _watch(self, now: float) -> None:
        """Replace workers stuck in one post far past the request timeout (a server that
        trickles bytes, a hanging DNS lookup): the timeout bounds each socket read, not
        the whole call. A worker given up on no longer counts against the pool, so
        delivery goes on at full concurrency; at most ``4 * reporter_concurrency`` of them
        exist at once (past that, the pool shrinks instead, until some of them end)."""
        limit = STUCK_FACTOR * self.settings.request_timeout + 1.0
        concurrency = self.settings.reporter_concurrency
        bound = ABANDONED_PER_WORKER * concurrency
        with self._lock:
            self._abandoned = {t for t in self._abandoned if t.is_alive()}
            stuck = sorted(
                (
                    (since, thread, record)
                    for thread, (since, record) in self._busy.items()
                    if now - since > limit and thread not in self._abandoned
                ),
                key=lambda item: item[0],
            )
            given_up = stuck[: max(0, bound - len(self._abandoned))]
            for _, thread, record in given_up:
                self._abandoned.add(thread)
                self._workers.discard(thread)
                self._held.pop(_key(record), None)
                self._counts["stuck"] += 1
            self._workers = {t for t in self._workers if t.is_alive()}
            while len(self._workers) < concurrency:
                self._spawn_worker()
            at_bound = len(given_up) < len(stuck)
            log_bound = at_bound and not self._at_bound_logged
            self._at_bound_logged = at_bound
            if given_up and not self._held:
                self._idle.notify_all()
        for since, _, record in given_up:
            logger.warning(
                "feedback post for %s has run %.0fs (timeout %.0fs); a new worker takes "
                "over and the record waits in the store for the sweep",
                record.message_sid,
                now - since,
                self.settings.request_timeout,
                extra={
                    "event": "report_stuck",
                    "tracking_id": record.tracking_id,
                    "message_sid": record.message_sid,
                    "seconds": round(now - since, 1),
                },
            )
        if log_bound:
            logger.warning(
                "%d feedback posts are stuck and %d workers were already given up on (the "
                "most kept at once): fewer posts run at once until some of them end",
                len(stuck) - len(given_up),
                bound,
                extra={
                    "event": "reporter_workers_exhausted",
                    "count": len(stuck) - len(given_up),
                    "limit": bound,
                },
            )

    def drain(
        self,
        timeout: float,
        progress: DrainProgress | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> Drained:
        """Deliver every due confirmation now: sweep the outbox into the queue and wait for
        the outcomes, until nothing is due or pending, or ``timeout`` seconds have passed,
        or ``stop`` is set (within 0.2 s: no further sweep).

        What is left when the time is up stays ``confirmed`` in the store. ``progress``
        is called with ``(done, taken, failed)`` as reports complete. Records another
        process holds (under its lease) are left to it. A reporter not started yet starts
        (and its first sweep counts as this drain's).
        """
        deadline = time.monotonic() + timeout
        before = self.stats()
        self.start()

        def since(stats: dict[str, int], name: str) -> int:
            return stats[name] - before[name]

        while True:
            stopped = stop is not None and stop.is_set()
            # A sweep that the scheduler runs at the same time has, once this returns,
            # its records counted as pending.
            taken = 0 if stopped else self.sweep()
            stats = self.stats()
            reported, failed = since(stats, "reported"), since(stats, "failed")
            if progress is not None:
                progress(reported + failed, since(stats, "swept"), failed)
            remaining = deadline - time.monotonic()
            if stopped or (taken == 0 and stats["pending"] == 0) or remaining <= 0:
                return Drained(since(stats, "swept"), reported, failed, stats["pending"])
            self.flush(timeout=min(0.2, remaining))

    def sweep(self) -> int:
        """Claim the store's due confirmations (lease ended: a crash, a restart, a full
        queue) into the queue, as many as it has room for; return how many were taken.

        The scheduler runs it on start and every ``sweep_interval``; the ``drain`` command
        runs it too. Sweeps take turns: once this returns, whatever a concurrent sweep
        claimed is held here and counted in ``stats()["pending"]``.
        """
        with self._sweeping:
            return self._sweep()

    def _sweep(self) -> int:
        s = self.settings
        total = 0
        while True:
            with self._lock:
                if self._closed or self._releasing:
                    return total
                room = min(SWEEP_BATCH, s.queue_size - self._queue.qsize())
            if room <= 0:
                return total
            now = time.time()
            claimed = self.store.claim(now=now, lease_until=now + s.lease_seconds, limit=room)
            taken = 0
            for record in claimed:
                key = _key(record)
                with self._lock:
                    if key in self._held:
                        continue
                    try:
                        self._queue.put_nowait(record)
                    except queue.Full:
                        continue  # its new lease runs out and a later sweep takes it
                    self._held[key] = record
                    self._counts["swept"] += 1
                    taken += 1
            total += taken
            if taken:
                logger.info(
                    "outbox sweep took %d unreported confirmation(s)",
                    taken,
                    extra={"event": "outbox_swept", "count": taken},
                )
            if len(claimed) < room:
                return total
