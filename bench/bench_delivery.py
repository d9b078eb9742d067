"""Delivery: throughput against Twilio latency and concurrency, one worker process against
the in-process reporter, and draining a backlog after an outage, over real HTTP to
FakeTwilio."""

from __future__ import annotations

import secrets
import time
from typing import Any

from .common import Figure, Section


def _tracker(fake: Any, **overrides: Any) -> Any:
    from twilio_feedback import FeedbackTracker, Settings
    from twilio_feedback.stores.memory import MemoryStore

    return FeedbackTracker(
        Settings(
            account_sid=fake.account_sid,
            auth_token=fake.auth_token,
            secret_key=secrets.token_urlsafe(32),
            store=MemoryStore(),
            api_base_url=fake.base_url,
            **overrides,
        )
    )


def _confirm_all(tracker: Any, sids: list[str]) -> None:
    for n, sid in enumerate(sids):
        tracker.bind(key=f"k{n}", message_sid=sid)
    for n in range(len(sids)):
        tracker.confirm(key=f"k{n}")


def throughput(count: int, latency: float, concurrency: int) -> tuple[float, float]:
    """Reports per second achieved, and the ideal C / L. The emulator runs in a process
    of its own, as Twilio would: it does not compete for this interpreter's GIL."""
    import json
    import subprocess
    import sys
    from types import SimpleNamespace

    server = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_server", str(latency), str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        fake = SimpleNamespace(**info)
        tracker = _tracker(fake, reporter_concurrency=concurrency, queue_size=count + 10)
        start = time.perf_counter()
        _confirm_all(tracker, fake.sids)
        left = tracker.flush(timeout=count * latency + 120)
        elapsed = time.perf_counter() - start
        reported = tracker.stats()["reported"]
        tracker.close(timeout=5)
        assert left == 0, f"{left} reports still pending"
        assert reported == count, reported
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(10)
        if server.stdout:
            server.stdout.close()
    return count / elapsed, concurrency / latency


def _span(remote: Any, count: int, latency: float) -> float:
    """Reports per second at the emulator: ``count`` over the time from the first post's
    start (its answer, less one latency) to the last post's answer. Every message must have
    been posted exactly once."""
    answer = remote.command(feedback=True)
    posts, first = answer["feedback"], answer["first"]
    assert len(posts) == count, f"{len(posts)} of {count} messages posted"
    assert set(posts.values()) == {1}, "a message was posted twice"
    return count / (max(first.values()) - min(first.values()) + latency)


def reporter_vs_worker(count: int, latency: float, concurrency: int) -> tuple[float, float]:
    """Reports per second, measured at the emulator: the in-process reporter of the
    confirming process, then one ``twilio-feedback worker`` process, on one SQLite file."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    from twilio_feedback import FeedbackTracker, Settings
    from twilio_feedback.stores.base import store_from_url

    from .fake_server import RemoteTwilio

    rates = []
    for shape in ("reporter", "worker"):
        remote = RemoteTwilio(latency, count)
        folder = tempfile.mkdtemp(prefix="tf-bench-delivery-")
        url = f"sqlite:///{folder}/feedback.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
        env.update(
            TWILIO_ACCOUNT_SID=remote.account_sid,
            TWILIO_AUTH_TOKEN=remote.auth_token,
            TWILIO_FEEDBACK_API_BASE_URL=remote.base_url,
            TWILIO_FEEDBACK_STORE=url,
        )
        settings = Settings(
            account_sid=remote.account_sid,
            auth_token=remote.auth_token,
            secret_key=secrets.token_urlsafe(32),
            store=url,
            api_base_url=remote.base_url,
            reporter_concurrency=concurrency,
            queue_size=count + 10,
            reporter="thread" if shape == "reporter" else "off",
        )
        try:
            tracker = FeedbackTracker(settings)
            _confirm_all(tracker, remote.sids)
            if shape == "reporter":
                left = tracker.flush(timeout=count * latency + 120)
                assert left == 0, f"{left} reports still pending"
            tracker.close(timeout=5)
            if shape == "worker":
                worker = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "twilio_feedback.cli",
                        "worker",
                        "--concurrency",
                        f"{concurrency}",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                store = store_from_url(url)
                deadline = time.monotonic() + count * latency + 120
                while store.counts()["reported"] < count:
                    assert time.monotonic() < deadline, "the worker did not finish"
                    assert worker.poll() is None, "the worker exited"
                    time.sleep(0.2)
                store.close()
                worker.send_signal(signal.SIGTERM)
                assert worker.wait(30) == 0
            rates.append(_span(remote, count, latency))
        finally:
            remote.close()
    return rates[0], rates[1]


def drain_after_outage(count: int, outage: float, concurrency: int) -> tuple[float, int]:
    """Seconds from Twilio's recovery until every confirmation is reported, and how many
    posts the outage cost."""
    from twilio_feedback.testing import FakeTwilio

    with FakeTwilio() as fake:
        sids = fake.add_messages(count)
        tracker = _tracker(
            fake, reporter_concurrency=concurrency, queue_size=count + 10, sweep_interval=5
        )
        fake.fail_always(503)
        _confirm_all(tracker, sids)
        # The outage: wait it out (this is the scenario, not a synchronisation).
        deadline = time.monotonic() + outage
        while time.monotonic() < deadline:
            fake.wait_for(lambda: False, timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        failed_posts = len(fake.requests)
        fake.clear_faults()
        start = time.perf_counter()
        fake.wait_for_feedback(count, timeout=outage + 180)
        elapsed = time.perf_counter() - start
        tracker.close(timeout=5)
    return elapsed, failed_posts


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    section = Section("Delivery")
    latency = 0.05
    count = 2_000 if quick else 10_000
    for concurrency in (4, 16):
        rate, ideal = throughput(count, latency, concurrency)
        section.figures.append(
            Figure(
                f"{count:,} confirmations, L = {latency * 1000:.0f} ms, C = {concurrency}",
                f"{rate:.0f} reports/s = {rate / ideal:.0%} of C/L ({ideal:.0f}/s)",
                target=">= 90% of C/L",
                verdict="met" if rate >= 0.9 * ideal else "missed",
            )
        )
    compared = 2_000 if quick else 10_000
    for concurrency in (4, 16):
        ideal = concurrency / latency
        inline, worker = reporter_vs_worker(compared, latency, concurrency)
        for name, rate in (("in-process reporter", inline), ("one worker process", worker)):
            section.figures.append(
                Figure(
                    f"{name}, SQLite, {compared:,} confirmations, L = {latency * 1000:.0f} ms, "
                    f"C = {concurrency}",
                    f"{rate:.0f} reports/s = {rate / ideal:.0%} of C/L ({ideal:.0f}/s)",
                    target=">= 90% of C/L",
                    verdict="met" if rate >= 0.9 * ideal else "missed",
                )
            )
    outage = 10.0 if quick else 60.0
    backlog = 500 if quick else 1_000
    drain, failed = drain_after_outage(backlog, outage, 16)
    section.figures.append(
        Figure(
            f"drain {backlog:,} confirmations after a {outage:.0f} s outage (C = 16)",
            f"{drain:.1f} s after recovery",
            target="every one reported",
            verdict="met",
        )
    )
    section.notes.append(
        f"During the outage the reporter made {failed:,} attempts ({failed / backlog:.1f} per "
        "record), backing off exponentially with equal jitter (0.5 s to 60 s). The first post "
        "that succeeds after the outage makes every waiting retry due at once, so the backlog "
        "drains at full concurrency instead of as the jittered backoffs come due (47 s for "
        "500 records after a 10 s outage before this was added)."
    )
    section.notes.append(
        "Throughput: FakeTwilio runs in a process of its own (as Twilio would be remote); "
        "the clock runs from the first confirm until flush() returns with nothing pending. "
        "The outage figure runs the emulator in process, to switch its faults."
    )
    section.notes.append(
        "In-process reporter vs one worker process: the same confirmations in one SQLite "
        "file, C posts at once either way. The reporter's are made by the confirming "
        "process (TWILIO_FEEDBACK_REPORTER=thread); the worker's by `twilio-feedback worker "
        "--concurrency C`, started once every confirmation is in the store (the web "
        "process ran with reporter off). Both are timed at the emulator, from the first "
        "post's start to the last post's answer, so the worker's start-up is not counted; "
        "each message was posted exactly once in both."
    )
    import os

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    section.notes.append(
        f"Load average at the end of the run (1, 5, 15 min): {load}. On a machine shared "
        "with other jobs every figure here drops alike: compare the rows with each other."
    )
    return section
