"""Process bookkeeping: throttled log lines and state rebuilt in a forked child."""

from __future__ import annotations

import ctypes
import os
import threading

import pytest

from twilio_feedback.lifecycle import ProcessLocal, Throttle


def test_throttle_says_how_many_events_each_line_stands_for() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    assert throttle.hit() == 1  # the first event is told at once
    assert [throttle.hit() for _ in range(5)] == [0] * 5
    now[0] = 10.0
    assert throttle.hit() == 6  # the five held back, and this one
    assert throttle.hit() == 0


class Counter(ProcessLocal):
    def __init__(self) -> None:
        self.restarted = 0
        super().__init__()

    def _init_state(self) -> None:
        super()._init_state()
        self.lock = threading.Lock()
        self.count = 0

    def _restartable(self) -> bool:
        return self.count > 0

    def _restart(self) -> None:
        self.restarted += 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_rebuilds_the_state_and_keeps_closed() -> None:
    running, closed = Counter(), Counter()
    running.count = 3
    running.lock.acquire()  # held by "another thread" at the moment of the fork
    closed.count = 1
    closed._closed = True
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        ok = (
            running.count == 0
            and running.lock.acquire(timeout=1)
            and running.restarted == 1
            and closed._closed
            and closed.restarted == 0
        )
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    running.lock.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_fork_the_hook_does_not_see_is_caught_at_the_next_entry_point() -> None:
    # uWSGI forks its workers from C and runs Python's at-fork hooks only with
    # py-call-osafterfork: the pid check, not a counter the hook bumps, is what notices.
    running = Counter()
    running.count = 3
    running.lock.acquire()
    read, write = os.pipe()
    pid = ctypes.PyDLL(None).fork()  # libc's fork, the GIL held: no at-fork hook runs
    if pid == 0:  # the child
        unseen = running.count == 3 and running.restarted == 0
        running._check_pid()  # what submit() and the other entry points call first
        ok = unseen and running.count == 0 and running.lock.acquire(timeout=1)
        os.write(write, b"1" if ok and running.restarted == 1 else b"0")
        os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    running.lock.release()
