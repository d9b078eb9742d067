"""Background delivery of feedback to Twilio (interim: one worker thread, one attempt).

The full reporter (bounded queue, workers, retries with backoff, outbox sweep, fork
safety) replaces this module; its public surface stays ``submit``, ``flush``, ``close``,
``stats``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import FeedbackError
from .records import Record

if TYPE_CHECKING:
    from .settings import Settings
    from .stores.base import Store
    from .twilio_api import TwilioAPI

__all__ = ["Reporter"]

logger = logging.getLogger("twilio_feedback.reporter")

OnReported = Callable[[Record], None]
OnFailed = Callable[[Record, FeedbackError], None]


class Reporter:
    """Posts ``Outcome=confirmed`` for confirmed records, off the request path."""

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
        self._queue: queue.Queue[Record] = queue.Queue(maxsize=settings.queue_size)
        self._lock = threading.Lock()
        self._counts = {"reported": 0, "retried": 0, "failed": 0, "dropped": 0}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the worker if it is not running."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="twilio-feedback-reporter", daemon=True
                )
                self._thread.start()

    def submit(self, record: Record) -> bool:
        """Queue a confirmed record for reporting; never blocks. ``False`` if the queue is
        full: the record stays ``confirmed`` in the store for the outbox sweep."""
        self.start()
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._count("dropped")
            logger.warning("feedback queue full; %s left in the store", record.tracking_id)
            return False
        return True

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            try:
                self._deliver(record)
            finally:
                self._queue.task_done()

    def _deliver(self, record: Record) -> None:
        assert record.message_sid is not None
        account = record.account_sid or self.settings.account_sid
        assert account is not None
        try:
            self.api.post_feedback(account, record.message_sid)
        except FeedbackError as exc:
            if exc.retryable:
                self.store.defer(
                    record.tracking_id,
                    lease_until=0.0,
                    attempts=record.attempts + 1,
                    code=exc.code,
                    message=exc.message,
                )
                self._count("retried")
            else:
                self.store.mark_failed(record.tracking_id, code=exc.code, message=exc.message)
                self._count("failed")
                if self.on_failed:
                    self.on_failed(record, exc)
            return
        self.store.mark_reported(record.tracking_id)
        self._count("reported")
        if self.on_reported:
            self.on_reported(record)

    def flush(self, timeout: float | None = 5.0) -> int:
        """Wait up to ``timeout`` seconds for queued reports; return how many remain."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._queue.all_tasks_done.wait(remaining)
            return int(self._queue.unfinished_tasks)

    def close(self, timeout: float | None = 5.0) -> int:
        """Flush, then stop accepting work; return how many reports were left pending."""
        return self.flush(timeout)

    def stats(self) -> dict[str, int]:
        """Counters since start."""
        with self._lock:
            return dict(self._counts)
