"""Delivery as Celery tasks: ``pip install 'twilio-feedback[celery]'``.

.. code-block:: python

    # proj/celery.py: the module that creates your Celery app, imported by the web
    # processes and the workers alike
    from celery import Celery
    from twilio_feedback.celery import setup

    app = Celery("proj", broker="redis://localhost:6379/1")
    feedback = setup(app)  # the tasks, and the app trackers with reporter="celery" use
    app.conf.beat_schedule = {"twilio-feedback-drain": feedback.drain_entry(every=60)}

With ``Settings(reporter="celery")`` a web process starts no reporter: each confirmation
enqueues one :data:`REPORT_TASK` (the record's tracking id and message SID; nothing
personal), and a Celery worker posts it. The task's retries are Celery's own
(``self.retry(countdown=...)``), timed by :class:`~twilio_feedback.retry.RetryPolicy`,
the reporter's rules: backoff with jitter, Twilio's ``Retry-After`` honoured, rejected
credentials retried slowly, nothing retried past the record's ``retry_window``, other 4xx
marked ``failed`` at once. Outcomes are written with the store's own operations, which
apply only while the record is ``confirmed`` with that message SID.

What makes it safe is the outbox, not the broker: the task is a fast path, and the
confirmed record stays in the store until Twilio accepted the report. Tasks are acked
early (Celery's default); a task lost on the way (a worker killed mid-task, a broker that
lost its queue, a publish that failed) leaves its record ``confirmed``, and the periodic
:data:`DRAIN_TASK` (schedule it with celery beat, :meth:`FeedbackTasks.drain_entry`)
delivers it once its lease ends: the lease a task takes covers one post,
``lease_seconds + 2 x request_timeout`` (35 s at default settings).
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import telemetry
from .errors import ConfigurationError, FeedbackError, MissingDependencyError, StorageError
from .lifecycle import Throttle
from .records import Record, State
from .retry import Fail, RetryPolicy, backoff
from .settings import ENV_PREFIX, Settings
from .twilio_api import ANSWER_DEADLINE_FACTOR

try:
    import celery
except ImportError:  # pragma: no cover - exercised without the extra
    raise MissingDependencyError("celery", "celery", "twilio_feedback.celery") from None

if TYPE_CHECKING:
    from twilio.rest import Client

    from .reporter import OnFailed, OnReported
    from .tracker import FeedbackTracker

__all__ = [
    "DRAIN_TASK",
    "REPORT_TASK",
    "CeleryDelivery",
    "FeedbackTasks",
    "setup",
]

logger = logging.getLogger("twilio_feedback.celery")

REPORT_TASK = "twilio_feedback.report"
"""Name of the task that reports one confirmation."""
DRAIN_TASK = "twilio_feedback.drain"
"""Name of the task that delivers every due confirmation (for celery beat)."""
STORE_RETRIES = 5
"""Times a report task tries again while the store fails, before it leaves the record to
the periodic drain."""
PUBLISH_LOG_EVERY = 10.0

SettingsSource = Settings | Callable[[], Settings] | None

_current: FeedbackTasks | None = None
_current_lock = threading.Lock()


def setup(
    app: celery.Celery,
    settings: SettingsSource = None,
    *,
    client: Client | None = None,
    queue: str | None = None,
    on_reported: OnReported | None = None,
    on_failed: OnFailed | None = None,
) -> FeedbackTasks:
    """Register the report and drain tasks on ``app``, and make it the app trackers with
    ``reporter="celery"`` in this process send to.

    ``settings`` are the workers': a :class:`~twilio_feedback.Settings`, a function that
    returns them (called at the first task, in the worker process), or ``None`` for
    :meth:`Settings.from_env` (no signing key needed: the tasks sign nothing). ``client``
    is a ``twilio.rest.Client`` for the workers' posts; ``queue`` the queue report tasks
    go to (default: Celery's routing); ``on_reported`` and ``on_failed`` are the tracker's
    hooks, called in the worker.
    """
    global _current
    tasks = FeedbackTasks(
        app, settings, client=client, queue=queue, on_reported=on_reported, on_failed=on_failed
    )
    with _current_lock:
        _current = tasks
    return tasks


class FeedbackTasks:
    """The tasks :func:`setup` registers on one Celery app, and the workers' tracker."""

    def __init__(
        self,
        app: celery.Celery,
        settings: SettingsSource = None,
        *,
        client: Client | None = None,
        queue: str | None = None,
        on_reported: OnReported | None = None,
        on_failed: OnFailed | None = None,
    ) -> None:
        self.app = app
        self.queue = queue
        self._settings = settings
        self._client = client
        self._hooks = (on_reported, on_failed)
        self._lock = threading.Lock()
        self._tracker: FeedbackTracker | None = None
        self._pid = 0
        tasks = self

        @app.task(name=REPORT_TASK, bind=True, max_retries=None, ignore_result=True)  # type: ignore[untyped-decorator]
        def report(
            task: Any,
            tracking_id: str,
            message_sid: str,
            lease_until: float | None = None,
            outcome: str | None = None,
        ) -> str:
            """Report one confirmation to Twilio."""
            return tasks._report(task, tracking_id, message_sid, lease_until, outcome)

        @app.task(name=DRAIN_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
        def drain(timeout: float = 50.0) -> dict[str, int]:
            """Deliver every due confirmation, within ``timeout`` seconds."""
            done = tasks.tracker().drain(timeout)
            if done.taken:
                logger.info(
                    "drain: %d taken, %d reported, %d failed, %d left",
                    done.taken,
                    done.reported,
                    done.failed,
                    done.left,
                    extra={"event": "drain_done", "count": done.taken},
                )
            return {"taken": done.taken, "reported": done.reported, "left": done.left}

        self.report = report
        """The report task (:data:`REPORT_TASK`)."""
        self.drain = drain
        """The drain task (:data:`DRAIN_TASK`)."""

    def drain_entry(self, every: float = 60.0) -> dict[str, Any]:
        """A ``beat_schedule`` entry that runs the drain every ``every`` seconds, each run
        given most of the interval (and expiring if a worker takes longer to start it)."""
        return {
            "task": DRAIN_TASK,
            "schedule": every,
            "kwargs": {"timeout": max(1.0, every * 0.8)},
            "options": {"expires": every},
        }

    def settings(self) -> Settings:
        """The workers' settings, as :func:`setup` was given them."""
        source = self._settings
        if isinstance(source, Settings):
            return source
        if source is not None:
            return source()
        overrides: dict[str, Any] = {}
        if not os.environ.get(f"{ENV_PREFIX}SECRET_KEY"):
            overrides["secret_key"] = secrets.token_urlsafe(32)  # signs nothing here
        return Settings.from_env(**overrides)

    def tracker(self) -> FeedbackTracker:
        """This worker process's tracker (built at the first task; a forked pool process
        builds its own). It runs no reporter: the tasks and the drain deliver."""
        from .tracker import FeedbackTracker

        with self._lock:
            if self._tracker is None or self._pid != os.getpid():
                on_reported, on_failed = self._hooks
                self._tracker = FeedbackTracker(
                    self.settings().replace(reporter="off"),
                    client=self._client,
                    on_reported=on_reported,
                    on_failed=on_failed,
                )
                self._pid = os.getpid()
            return self._tracker

    # -- the report task -------------------------------------------------------------------

    def _report(
        self,
        task: Any,
        tracking_id: str,
        message_sid: str,
        lease_until: float | None,
        outcome: str | None,
    ) -> str:
        tracker = self.tracker()
        store, settings = tracker.store, tracker.settings
        if outcome is not None:
            # Twilio answered already; only the store had not taken the outcome.
            return self._write(task, tracking_id, message_sid, outcome)
        try:
            record = store.get(tracking_id)
        except StorageError:
            return self._store_down(task, tracking_id, message_sid, lease_until)
        if record is not None and record.message_sid != message_sid:
            return "moved on"  # its key was bound to another message since
        if record is None or record.state is not State.CONFIRMED:
            return "done"
        now = time.time()
        if (
            lease_until is not None
            and abs(record.lease_until - lease_until) > 1e-3
            and record.lease_until > now
        ):
            # Someone else holds it (a sweep took it when this task was late): theirs.
            return "held elsewhere"
        hold = now + settings.lease_seconds + ANSWER_DEADLINE_FACTOR * settings.request_timeout
        try:
            if not store.renew([(tracking_id, message_sid)], lease_until=hold):
                return "done"
        except StorageError:
            return self._store_down(task, tracking_id, message_sid, lease_until)
        account = str(record.account_sid or settings.account_sid)
        try:
            tracker.api.post_feedback(account, message_sid)
        except FeedbackError as exc:
            return self._failed(task, tracker, record, account, exc)
        logger.debug(
            "feedback reported for %s",
            message_sid,
            extra={"event": "celery_report_accepted", "message_sid": message_sid},
        )
        telemetry.reported()
        return self._write(task, tracking_id, message_sid, "reported", record=record)

    def _failed(
        self,
        task: Any,
        tracker: FeedbackTracker,
        record: Record,
        account: str,
        exc: FeedbackError,
    ) -> str:
        settings, store = tracker.settings, tracker.store
        sid = str(record.message_sid)
        policy = RetryPolicy(settings.retry_window)
        now = time.time()
        attempts = record.attempts + 1
        decision = policy.decide(
            exc,
            attempts=attempts,
            account=account,
            now=now,
            window_end=policy.window_end(record.confirmed_at, record.created_at, now),
        )
        if isinstance(decision, Fail):
            telemetry.failed(exc)
            logger.warning(
                "feedback for %s failed for good after %d attempt(s): %s",
                sid,
                attempts,
                exc.message,
                extra={
                    "event": "celery_report_failed",
                    "tracking_id": record.tracking_id,
                    "message_sid": sid,
                    "attempt": attempts,
                    "twilio_code": exc.code,
                },
            )
            failed = record.replace(
                state=State.FAILED,
                lease_until=0.0,
                attempts=attempts,
                error_code=exc.code,
                error_message=exc.message,
            )
            done = self._write(
                task, record.tracking_id, sid, "failed", code=exc.code, message=exc.message
            )
            self._hook(1, failed, exc)
            return done
        # The retry is due at `now + delay`; a sweep may take it a lease later, should the
        # retry task never come.
        lease = now + decision.delay + settings.lease_seconds
        lease_until: float | None = lease
        try:
            store.defer(
                record.tracking_id,
                sid,
                lease_until=lease,
                attempts=attempts,
                code=exc.code,
                message=exc.message,
            )
        except StorageError:
            lease_until = None  # the retry goes out all the same
        telemetry.retried(exc)
        logger.info(
            "feedback for %s failed (%s); retry %d in %.1fs",
            sid,
            exc.message,
            attempts,
            decision.delay,
            extra={
                "event": "celery_report_retry",
                "tracking_id": record.tracking_id,
                "message_sid": sid,
                "attempt": attempts,
                "twilio_code": exc.code,
            },
        )
        if task.request.is_eager:
            return "left to the drain"  # an eager retry would run at once, not in `delay`
        raise task.retry(
            args=(record.tracking_id, sid),
            kwargs={"lease_until": lease_until},
            countdown=decision.delay,
        )

    def _write(
        self,
        task: Any,
        tracking_id: str,
        message_sid: str,
        outcome: str,
        *,
        code: int | None = None,
        message: str | None = None,
        record: Record | None = None,
    ) -> str:
        tracker = self.tracker()
        try:
            if outcome == "reported":
                tracker.store.mark_reported(tracking_id, message_sid)
            else:
                tracker.store.mark_failed(tracking_id, message_sid, code=code, message=message)
        except StorageError:
            # Not posted again: only the outcome is tried again.
            if task.request.is_eager or task.request.retries >= STORE_RETRIES:
                logger.warning(
                    "the %s outcome of %s could not be written: the store is unavailable; "
                    "it may be posted again once its lease ends",
                    outcome,
                    message_sid,
                    extra={
                        "event": "celery_outcome_unwritten",
                        "tracking_id": tracking_id,
                        "message_sid": message_sid,
                        "outcome": outcome,
                    },
                )
                return "outcome lost"
            raise task.retry(
                args=(tracking_id, message_sid),
                kwargs={"outcome": outcome},
                countdown=backoff(task.request.retries + 1, cap=30.0),
            ) from None
        if outcome == "reported" and record is not None:
            self._hook(0, record.replace(state=State.REPORTED, lease_until=0.0))
        return outcome

    def _store_down(
        self, task: Any, tracking_id: str, message_sid: str, lease_until: float | None
    ) -> str:
        if task.request.is_eager or task.request.retries >= STORE_RETRIES:
            logger.warning(
                "the store is unavailable: the report of %s is left to the periodic drain",
                message_sid,
                extra={
                    "event": "report_left_to_drain",
                    "tracking_id": tracking_id,
                    "message_sid": message_sid,
                },
            )
            return "left to the drain"
        raise task.retry(
            args=(tracking_id, message_sid),
            kwargs={"lease_until": lease_until},
            countdown=backoff(task.request.retries + 1, cap=30.0),
        ) from None

    def _hook(self, which: int, *args: Any) -> None:
        hook = self._hooks[which]
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            logger.exception(
                "twilio-feedback hook %s raised",
                getattr(hook, "__name__", hook),
                extra={"event": "celery_hook_failed"},
            )


class CeleryDelivery:
    """``reporter="celery"``: each won confirmation enqueues one :data:`REPORT_TASK` on the
    app given to :func:`setup`. Publishing waits on the broker, so async callers run it in
    a worker thread. A publish that fails is logged and costs nothing: the record stays
    ``confirmed``, for the periodic drain once its lease ends."""

    blocking = True

    def __init__(self, settings: Settings) -> None:
        with _current_lock:
            tasks = _current
        if tasks is None:
            raise ConfigurationError(
                "reporter='celery' needs your Celery app: call "
                "twilio_feedback.celery.setup(app) in the module that creates it, and import "
                "that module before the tracker is built"
            )
        self.tasks = tasks
        self.settings = settings
        self._failures = Throttle(PUBLISH_LOG_EVERY)

    def submit(self, record: Record) -> bool:
        """Enqueue the report task (the tracking id, the message SID and the lease the
        confirmation took: nothing personal)."""
        options: dict[str, Any] = {}
        if self.tasks.queue is not None:
            options["queue"] = self.tasks.queue
        try:
            self.tasks.report.apply_async(
                args=(record.tracking_id, record.message_sid),
                kwargs={"lease_until": record.lease_until},
                **options,
            )
        except Exception as exc:
            count = self._failures.hit()
            if count:
                logger.warning(
                    "could not enqueue %d report task(s) (latest %s: %s): left in the store "
                    "for the periodic drain",
                    count,
                    record.tracking_id,
                    type(exc).__name__,
                    extra={
                        "event": "report_enqueue_failed",
                        "tracking_id": record.tracking_id,
                        "count": count,
                        "error_type": type(exc).__name__,
                    },
                )
            return False
        return True
