"""Process bookkeeping shared by the library's background parts.

Three things every part that owns a thread needs, written once:

- :class:`ProcessLocal`: state that belongs to one process. A forked child (gunicorn
  ``--preload``, ``multiprocessing`` with fork) inherits the parent's objects but not its
  threads, and a lock the parent held mid-operation stays locked in the child forever; so
  the child rebuilds the state (``_init_state``), keeping only whether the object was
  closed. An ``os.register_at_fork`` hook does it at once; a pid check catches a fork the
  hook did not see (``os.fork`` called from C code).
- :func:`close_at_exit`: objects closed, within one shared deadline, when the interpreter
  exits (pending reports get a last chance to go out).
- :class:`Throttle`: a log line at most every so many seconds, saying how many events it
  stands for, so an outage cannot flood the logs.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["EXIT_TIMEOUT", "ProcessLocal", "Throttle", "close_at_exit"]

logger = logging.getLogger("twilio_feedback")

EXIT_TIMEOUT = 5.0
"""Seconds the interpreter's exit waits, at most, for every open tracker to close."""


class ProcessLocal:
    """Base of objects whose state lives in one process.

    Subclasses build their state in :meth:`_init_state` (calling ``super()``), and may
    override :meth:`_restartable` and :meth:`_restart` to start again in a forked child what
    was running in the parent. :meth:`_check_pid` is for entry points that may run first
    in a child.
    """

    _closed: bool = False

    def __init__(self) -> None:
        self._init_state()
        _fork_aware.add(self)

    def _init_state(self) -> None:
        """Build the per-process state (locks, queues, counters, threads)."""
        self._pid = os.getpid()

    def _restartable(self) -> bool:
        """Whether, in the parent, there is something :meth:`_restart` should restart."""
        return False

    def _restart(self) -> None:
        """Called in a forked child after :meth:`_init_state`, when :meth:`_restartable`."""

    def _after_fork(self) -> None:
        # The parent's threads do not exist here and its locks may have been held
        # mid-operation; what the parent had in flight is the parent's to finish.
        closed = self._closed
        running = not closed and self._restartable()
        self._init_state()
        self._closed = closed
        if running:
            self._restart()

    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()


_fork_aware: weakref.WeakSet[ProcessLocal] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for obj in list(_fork_aware):
        obj._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Closable(Protocol):
    def _close_at_exit(self, timeout: float) -> None: ...


_at_exit: weakref.WeakSet[_Closable] = weakref.WeakSet()


def close_at_exit(obj: _Closable) -> Callable[[], None]:
    """Call ``obj._close_at_exit(seconds_left)`` when the interpreter exits (the objects
    share :data:`EXIT_TIMEOUT`); held weakly. Returns a function that cancels it."""
    _at_exit.add(obj)
    return lambda: _at_exit.discard(obj)


@atexit.register
def _close_everything() -> None:
    deadline = time.monotonic() + EXIT_TIMEOUT
    for obj in list(_at_exit):
        try:
            obj._close_at_exit(max(0.0, deadline - time.monotonic()))
        except Exception:
            logger.exception("closing %r at exit failed", obj, extra={"event": "exit_close_failed"})


class Throttle:
    """Counts events; :meth:`hit` answers how many to report now, at most once every
    ``every`` seconds (``0``: stay quiet, the count carries over). Thread-safe."""

    def __init__(self, every: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._count = 0
        self._last = float("-inf")

    def hit(self) -> int:
        """Record one event; return the number of events to log now, or ``0``."""
        now = self._clock()
        with self._lock:
            self._count += 1
            if now - self._last < self.every:
                return 0
            count, self._count, self._last = self._count, 0, now
            return count
