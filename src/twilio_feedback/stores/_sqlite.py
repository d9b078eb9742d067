"""SQLite's one writer at a time, for the stores on it (the SQL store and the Django one).

SQLite lets one writer in at a time; a writer that finds the file locked sleeps in its
busy handler (1, 2, 5, ... up to 100 ms between tries), so it goes in long after the
transaction it waited for has ended. The writers of one process to one file take turns on
a lock of this process instead (:class:`WriteTurns`), and the next goes in as soon as the
lock is released; other processes still queue in the busy handler.

A purge deletes in batches (:func:`purge_in_batches`): on SQLite each sized to hold the
write lock about :data:`PURGE_BATCH_TIME`, with a passive checkpoint every
:data:`PURGE_CHECKPOINT_ROWS` records, between two batches.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

PURGE_BATCH = 500
"""The most expired records a purge deletes per transaction, by default."""
PURGE_PAUSE = 0.05
"""The longest pause between two of a purge's batches, in seconds."""
PURGE_BATCH_TIME = 0.002
"""SQLite: how long a purge's batch should hold the write lock, in seconds; the batches
are sized to it, between :data:`PURGE_MIN_BATCH` and the store's ``purge_batch``."""
PURGE_MIN_BATCH = 50
"""SQLite: the fewest records a purge's batch deletes (unless ``purge_batch`` is smaller):
a transaction's own cost, on a busy machine, must not shrink the batches to nothing."""
PURGE_CHECKPOINT_ROWS = 250
"""SQLite: a purge checkpoints after deleting this many records (a few hundred pages of
log in a large table, under the 1,000 of SQLite's automatic checkpoint)."""

_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_LOCK = threading.Lock()


def _write_lock(key: str) -> threading.RLock:
    """The lock this process's writers to the SQLite file ``key`` take in turns."""
    lock = _WRITE_LOCKS.get(key)
    if lock is None:
        with _WRITE_LOCKS_LOCK:
            lock = _WRITE_LOCKS.setdefault(key, threading.RLock())
    return lock


def _new_write_locks() -> None:
    # A forked child's copies may be held by threads that do not exist in it.
    global _WRITE_LOCKS_LOCK
    _WRITE_LOCKS_LOCK = threading.Lock()
    _WRITE_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_write_locks)


@functools.lru_cache(maxsize=64)
def _file_key(database: str) -> str:
    return database if database.startswith("file:") else os.path.realpath(database)


class WriteTurns:
    """The turns of this process's writers to one SQLite file: every store on the file
    (SQL or Django) shares them."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        """How long a writer waits for its turn before it goes on without it (and lets
        SQLite decide): the connections' busy timeout."""

    def held(self, database: str) -> AbstractContextManager[None]:
        """Hold the turn on the file ``database`` (a path, or a ``file:`` URI)."""
        return _Turn(_write_lock(_file_key(database)), self.timeout)


class _Turn:
    """A write turn, held for a ``with`` block (a class, not a generator: it is taken
    around every write)."""

    __slots__ = ("_got", "_lock", "_timeout")

    def __init__(self, lock: threading.RLock, timeout: float) -> None:
        self._lock = lock
        self._timeout = timeout
        self._got = False

    def __enter__(self) -> None:
        self._got = self._lock.acquire(timeout=self._timeout)

    def __exit__(self, *exc: object) -> None:
        if self._got:
            self._lock.release()


def purge_in_batches(
    delete: Callable[[int], int],
    *,
    most: int,
    writing: Callable[[], AbstractContextManager[object]] | None,
    checkpoint: Callable[[], None] | None = None,
) -> int:
    """Call ``delete(limit)`` (one transaction: it deletes up to ``limit`` expired records
    and returns how many) until a batch comes short; return how many were deleted. At
    most ``most`` records a batch, pausing between two as long as the batch took, so that
    other writers go first.

    ``writing``, on SQLite: the write turn, held around each batch; the batches are then
    sized to hold it about :data:`PURGE_BATCH_TIME`, and ``checkpoint`` runs every
    :data:`PURGE_CHECKPOINT_ROWS` records, outside it. ``None``: a server (PostgreSQL).
    """
    size = most
    smallest = min(most, PURGE_MIN_BATCH)
    total = unchecked = 0
    while True:
        with writing() if writing is not None else contextlib.nullcontext():
            started = time.perf_counter()  # the lock's hold, not the wait for it
            count = delete(size)
            took = time.perf_counter() - started
        total += count
        if count < size:
            return total
        if writing is not None:
            unchecked += count
            if checkpoint is not None and unchecked >= PURGE_CHECKPOINT_ROWS:
                checkpoint()
                unchecked = 0
            wanted = int(size * PURGE_BATCH_TIME / max(took, 1e-6))
            size = max(smallest, min(most, wanted, size * 2))
        time.sleep(min(took, PURGE_PAUSE))
