"""Delivery end to end, with real processes and servers: a SIGKILLed process's outbox is
re-driven after a restart, gunicorn --preload workers each report, a forked child gets
its own reporter, and an ASGI app under uvicorn never waits for Twilio."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.stores.base import store_from_url
from twilio_feedback.testing import FakeTwilio

from .conftest import SECRET_KEY
from .servers import free_port

PHONE, SENDER = "+15558675310", "+15017122661"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (a condition, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def child_env(fake: FakeTwilio, **settings: object) -> dict[str, str]:
    """Environment for a child process whose ``Settings.from_env()`` targets ``fake``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(
        TWILIO_ACCOUNT_SID=fake.account_sid,
        TWILIO_AUTH_TOKEN=fake.auth_token,
        TWILIO_FEEDBACK_SECRET_KEY=SECRET_KEY,
        TWILIO_FEEDBACK_API_BASE_URL=fake.base_url,
        PYTHONWARNINGS="ignore",
    )
    env.update({f"TWILIO_FEEDBACK_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no output from the child within {timeout}s")
    return process.stdout.readline().strip()


OUTBOX_CHILD = textwrap.dedent(
    """
    import json, sys, threading, time
    from twilio_feedback import FeedbackTracker

    tracker = FeedbackTracker()  # Settings.from_env()
    if sys.argv[1] == "confirm":
        for n in range(int(sys.argv[2])):
            tracker.send(to="+15558675310", from_="+15017122661", body="code", key=f"k{n}")
            assert tracker.confirm(key=f"k{n}").confirmed
        print("confirmed", flush=True)
        threading.Event().wait()  # until SIGKILL
    else:
        # Restarted: no request comes in; the reporter's sweep alone drains the outbox.
        deadline = time.monotonic() + 30
        while tracker.store.counts()["confirmed"] and time.monotonic() < deadline:
            time.sleep(0.05)
        print(json.dumps(tracker.stats()), flush=True)
        tracker.close()
    """
)


def test_sigkill_after_confirming_then_restart_reports_everything(
    tmp_path: Path, fake_twilio: FakeTwilio
) -> None:
    # The mechanism, configured from the environment, with short leases so it runs in
    # seconds; tests/stores/test_durability.py has the 30 s takeover at default settings.
    pytest.importorskip("sqlalchemy")
    script = tmp_path / "outbox_child.py"
    script.write_text(OUTBOX_CHILD)
    store_url = f"sqlite:///{tmp_path / 'outbox.db'}"
    env = child_env(fake_twilio, store=store_url, lease_seconds=1, sweep_interval=0.2)
    count = 10

    fake_twilio.fail_always(503)  # Twilio is down for the whole first run
    with (tmp_path / "first.err").open("w") as err:
        first = subprocess.Popen(
            [sys.executable, str(script), "confirm", str(count)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            assert read_line(first, 30) == "confirmed"
            assert fake_twilio.wait_for(
                lambda: any(r.path.endswith("/Feedback.json") for r in fake_twilio.requests), 10
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert first.stdout is not None
            first.stdout.close()
    assert first.returncode == -signal.SIGKILL
    assert fake_twilio.feedback == []
    store = store_from_url(store_url)
    assert store.counts()["confirmed"] == count
    store.close()

    fake_twilio.clear_faults()  # Twilio is back
    with (tmp_path / "second.err").open("w") as err:
        second = subprocess.run(
            [sys.executable, str(script), "restart"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=45,
        )
    assert second.returncode == 0, (tmp_path / "second.err").read_text()
    stats = json.loads(second.stdout.strip().splitlines()[-1])
    assert stats["reported"] == count
    assert stats["swept"] == count
    assert {p.message_sid for p in fake_twilio.feedback} == {m.sid for m in fake_twilio.messages}
    store = store_from_url(store_url)
    assert store.counts()["reported"] == count
    store.close()


GUNICORN_APP = textwrap.dedent(
    """
    import os, time
    from urllib.parse import parse_qs
    from twilio_feedback import FeedbackTracker, Settings
    from twilio_feedback.stores.memory import MemoryStore

    # Created at import: with --preload, in the master, before the workers fork.
    tracker = FeedbackTracker(Settings.from_env(store=MemoryStore()))
    MASTER = os.getpid()

    def app(environ, start_response):
        query = parse_qs(environ.get("QUERY_STRING", ""))
        key = f"{os.getpid()}:{query['key'][0]}"
        # The memory store is per process: bind and confirm in the same worker.
        sid = tracker.send(to="+15558675310", from_="+15017122661", body="code", key=key).sid
        status = tracker.confirm(key=key).status
        time.sleep(float(query.get("hold", ["0"])[0]))  # keep this worker busy
        body = f"{os.getpid()} {MASTER} {sid} {status}".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    """
)


@pytest.fixture
def gunicorn(tmp_path: Path, fake_twilio: FakeTwilio) -> Iterator[str]:
    """gunicorn --preload with 2 sync workers serving GUNICORN_APP; yields its base URL."""
    pytest.importorskip("gunicorn")
    (tmp_path / "preload_app.py").write_text(GUNICORN_APP)
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "--preload", "--workers", "2"),
            *("--bind", f"127.0.0.1:{port}", "--chdir", str(tmp_path)),
            *("--graceful-timeout", "10", "preload_app:app"),
        ],
        env=child_env(fake_twilio),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                urllib.request.urlopen(f"{url}/?key=ping", timeout=2).read()
            except OSError:
                return False
            return True

        assert wait_until(up, 30), (tmp_path / "gunicorn.log").read_text()
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)
        log.close()


def test_gunicorn_preload_workers_each_report(gunicorn: str, fake_twilio: FakeTwilio) -> None:
    sid_pid: dict[str, str] = {}
    masters = set()

    def get(n: int) -> None:
        with urllib.request.urlopen(f"{gunicorn}/?key=k{n}&hold=0.2", timeout=10) as response:
            pid, master, sid, status = response.read().decode().split()
        assert status == "confirmed"
        sid_pid[sid] = pid
        masters.add(master)

    # Two requests at once: a busy sync worker leaves the second to the other one.
    deadline = time.monotonic() + 30
    n = 0
    with ThreadPoolExecutor(2) as pool:
        while len(set(sid_pid.values())) < 2 or len(sid_pid) < 6:
            assert time.monotonic() < deadline, f"only saw workers {set(sid_pid.values())}"
            list(pool.map(get, (n, n + 1)))
            n += 2
    posts = fake_twilio.wait_for_feedback(len(sid_pid) + 1, timeout=20)  # + the warm-up ping
    reported = {p.message_sid for p in posts}
    assert set(sid_pid) <= reported
    assert len({sid_pid[sid] for sid in reported if sid in sid_pid}) == 2
    assert masters.isdisjoint(sid_pid.values())  # the workers, not the preloading master


def test_a_forked_child_gets_its_own_reporter(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    parent_sid = str(tracker.send(to=PHONE, from_=SENDER, body="code", key="parent").sid)
    child_sid = str(tracker.send(to=PHONE, from_=SENDER, body="code", key="child").sid)
    later_sid = str(tracker.send(to=PHONE, from_=SENDER, body="code", key="later").sid)
    tracker.confirm(key="parent")
    assert tracker.flush(5) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: report, then leave without running pytest's teardown
        code = 1
        try:
            confirmed = tracker.confirm(key="child").confirmed
            # Counters are per process: the parent's confirm and report are not counted.
            stats = tracker.stats() if tracker.flush(10) == 0 else {}
            reported = stats.get("reported") == 1 and stats.get("confirmed") == 1
            code = 0 if confirmed and reported else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status[1]) == 0
    assert [p.message_sid for p in fake_twilio.feedback] == [parent_sid, child_sid]
    # The parent's reporter and counters are untouched by the fork, and still deliver.
    assert tracker.stats()["reported"] == 1
    tracker.confirm(key="later")
    assert tracker.flush(5) == 0
    assert tracker.stats()["reported"] == 2
    assert fake_twilio.feedback[-1].message_sid == later_sid


def test_asgi_app_under_uvicorn_never_waits_for_twilio(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    tracker = FeedbackTracker(settings)
    sids = [
        str(tracker.send(to=PHONE, from_=SENDER, body="code", key=f"k{n}").sid) for n in range(4)
    ]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        result = await tracker.confirm_async(key=scope["query_string"].decode())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": result.status.encode()})

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 30)
        fake_twilio.latency = 2.0
        timings = []
        for n in range(4):
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?k{n}", timeout=10) as resp:
                assert resp.read() == b"confirmed"
            timings.append(time.perf_counter() - started)
        assert max(timings) < 1.0  # Twilio takes 2 s per post
        posts = fake_twilio.wait_for_feedback(4, timeout=30)
        assert sorted(p.message_sid for p in posts) == sorted(sids)
        assert tracker.flush(5) == 0
        assert tracker.stats()["reported"] == 4
    finally:
        server.should_exit = True
        thread.join(10)
        tracker.close(timeout=1)
