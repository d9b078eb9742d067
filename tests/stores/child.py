"""Subprocess helpers for the multi-process tests (run with ``python -m tests.stores.child``)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable


def in_forked_child(work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child of this process; what it returned (the child must
    exit cleanly)."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.write(write, work().encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as answer:
        said = answer.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return said


def confirm_race(url: str, ids: list[str], threads: int) -> None:
    from twilio_feedback.stores import store_from_url

    # Eighty threads on a small machine: generous timeouts, the subject is atomicity.
    options = (
        {"socket_timeout": 30.0, "connect_timeout": 30.0}
        if url.startswith("redis")
        else {"busy_timeout": 30.0, "connect_timeout": 30.0}
    )
    store = store_from_url(url, **options)
    wins = []
    barrier = threading.Barrier(threads)

    def run() -> None:
        barrier.wait()
        mine = 0
        for tracking_id in ids:
            now = time.time()
            won, _ = store.confirm(tracking_id, now=now, lease_until=now + 60, keep_until=now + 60)
            mine += won
        wins.append(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    store.close()
    print(json.dumps({"wins": sum(wins)}), flush=True)


def reporter(settings: dict[str, object], confirm: list[tuple[str, str]]) -> None:
    from twilio_feedback import FeedbackTracker, Settings

    tracker = FeedbackTracker(Settings(**settings))  # type: ignore[arg-type]
    for key, sid in confirm:
        tracker.bind(key=key, message_sid=sid)
        assert tracker.confirm(key=key).confirmed
    print("ready", flush=True)

    def report(signum: int, frame: object) -> None:
        print(json.dumps(tracker.stats()), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, report)  # SIGTERM: print the counters and leave
    threading.Event().wait()  # until killed


if __name__ == "__main__":
    args = json.loads(sys.argv[2])
    if sys.argv[1] == "race":
        confirm_race(**args)
    else:
        reporter(**args)
