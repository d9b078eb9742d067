"""A long-running delivery process: ``twilio-feedback worker``.

A :class:`Worker` is a :class:`~twilio_feedback.reporter.Reporter` driven without rest over
a shared store (SQLite file, PostgreSQL, Redis): it runs
:meth:`~twilio_feedback.reporter.Reporter.drain` in short rounds, so new confirmations are taken
within ``poll_interval`` of their arrival, with the same claims and leases as a web
process's reporter. Any number of workers on any number of hosts share the outbox: a claim
is atomic and a held record's lease is renewed by its holder, so no two post the same
record while both live. Each takes at most :data:`PREFETCH` x ``concurrency`` records at a
time, so a backlog is shared out rather than taken whole by the first.

:meth:`Worker.stop` (the command calls it on SIGTERM or SIGINT) stops taking work: records
taken but not started are handed back to the store at once, for the other workers, and the
posts in flight get ``grace`` seconds to finish. What is left stays ``confirmed``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import StorageError

if TYPE_CHECKING:
    from .tracker import FeedbackTracker

__all__ = ["GRACE", "LOG_INTERVAL", "POLL_INTERVAL", "PREFETCH", "Worker", "WorkerResult"]

logger = logging.getLogger("twilio_feedback.worker")

POLL_INTERVAL = 1.0
"""Seconds an idle worker waits before looking at the outbox again."""
LOG_INTERVAL = 60.0
"""Seconds between two log lines with the worker's counts."""
GRACE = 20.0
"""Seconds the posts in flight get to finish once the worker is told to stop."""
PREFETCH = 8
"""Records a worker holds at once, at most, per post it runs at once (``concurrency``)."""


@dataclass(frozen=True, slots=True)
class WorkerResult:
    """What a worker did before it stopped: reports ``reported`` and ``failed`` for good,
    ``retried``, and ``left`` (in flight when the grace period ended, or not handed back
    because the store was down: they stay ``confirmed``, taken over when their lease
    ends)."""

    reported: int
    failed: int
    retried: int
    left: int


class Worker:
    """Delivers a shared store's confirmations until :meth:`stop` is called.

    ``tracker`` gives the store, the Twilio client and the hooks (build it with
    ``reporter="off"``, so it runs no reporter of its own). ``concurrency`` is the number
    of posts in flight at once (default: ``reporter_concurrency``).
    """

    def __init__(
        self,
        tracker: FeedbackTracker,
        *,
        concurrency: int | None = None,
        poll_interval: float = POLL_INTERVAL,
        log_interval: float = LOG_INTERVAL,
        grace: float = GRACE,
    ) -> None:
        self.tracker = tracker
        self.concurrency = concurrency or tracker.settings.reporter_concurrency
        self.poll_interval = poll_interval
        self.log_interval = log_interval
        self.grace = grace
        self.reporter = tracker._new_reporter(
            reporter_concurrency=self.concurrency, queue_size=PREFETCH * self.concurrency
        )
        self._stopping = threading.Event()

    def stop(self, grace: float | None = None) -> None:
        """Ask :meth:`run` to stop (from a signal handler or another thread); ``grace``
        replaces the time the posts in flight get (``0``: none)."""
        if grace is not None:
            self.grace = grace
        self._stopping.set()

    def run(self) -> WorkerResult:
        """Deliver until :meth:`stop`; then finish the posts in flight within ``grace``
        seconds and hand the rest back to the store."""
        reporter = self.reporter
        reporter.start()
        logger.info(
            "worker started: %d post(s) at once, store %r",
            self.concurrency,
            self.tracker.store,
            extra={"event": "worker_started"},
        )
        last = dict.fromkeys(("reported", "failed", "retried"), 0)
        next_log = time.monotonic() + self.log_interval
        try:
            while not self._stopping.is_set():
                try:
                    taken = reporter.drain(self.poll_interval, stop=self._stopping).taken
                except StorageError:
                    taken = 0  # the store is down (the boundary logged it): try again later
                except Exception:
                    logger.exception(
                        "the worker's drain failed", extra={"event": "worker_drain_failed"}
                    )
                    taken = 0
                if taken == 0:
                    self._stopping.wait(self.poll_interval)
                if time.monotonic() >= next_log:
                    next_log = time.monotonic() + self.log_interval
                    last = self._log_counts(last)
        finally:
            stats = reporter.stats()
            logger.info(
                "worker stopping: %d post(s) in flight get %.0fs to finish; the rest goes "
                "back to the store",
                stats["pending"],
                self.grace,
                extra={"event": "worker_stopping", "count": stats["pending"]},
            )
            left = reporter.close(self.grace, release=True)
        stats = reporter.stats()
        if left:
            logger.warning(
                "worker stopped with %d report(s) unfinished: they stay confirmed and are "
                "taken over once their lease ends",
                left,
                extra={"event": "worker_stopped", "count": left},
            )
        else:
            logger.info("worker stopped", extra={"event": "worker_stopped", "count": 0})
        return WorkerResult(stats["reported"], stats["failed"], stats["retried"], left)

    def _log_counts(self, last: dict[str, int]) -> dict[str, int]:
        stats = self.reporter.stats()
        oldest = ""
        try:
            health = self.tracker.health()
        except StorageError:
            health = None
        if health is not None and health.oldest_unreported_age is not None:
            oldest = f"; oldest unreported confirmation {health.oldest_unreported_age:.0f}s old"
        logger.info(
            "worker: %d reported, %d failed, %d retried in the last %.0fs; %d in hand%s",
            stats["reported"] - last["reported"],
            stats["failed"] - last["failed"],
            stats["retried"] - last["retried"],
            self.log_interval,
            stats["pending"],
            oldest,
            extra={"event": "worker_counts", "count": stats["pending"]},
        )
        return {name: stats[name] for name in last}
