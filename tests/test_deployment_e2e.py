"""Deployment shapes end to end, with real processes: web processes with ``reporter="off"``
under uvicorn only write the store (no post, no thread); two ``twilio-feedback worker``
processes then report every confirmation, each message posted exactly once at the
emulator, and a SIGTERM to one of them mid-drain loses nothing. On SQLite, PostgreSQL and
Redis.

The issue's figure, 2,000 confirmations per store, runs in CI (about 10 s per store on a
2-core machine); ``TF_E2E_CONFIRMATIONS`` changes it.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.stores.base import store_from_url
from twilio_feedback.testing import FakeTwilio

from .conftest import CHROME, SECRET_KEY
from .servers import free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

COUNT = int(os.environ.get("TF_E2E_CONFIRMATIONS", "2000"))

STORES = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]

WEB_APP = textwrap.dedent(
    """
    import threading
    from twilio_feedback import FeedbackTracker
    from twilio_feedback.asgi import FeedbackMiddleware

    tracker = FeedbackTracker()  # Settings.from_env(): TWILIO_FEEDBACK_REPORTER=off

    async def site(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/threads":
            # The SQL store's own threads run only what a request awaits: not counted.
            names = [
                t.name
                for t in threading.enumerate()
                if t.name.startswith("twilio-") and t.name != "twilio-feedback-sql"
            ]
            body = ",".join(names).encode()
        else:
            body = scope["twilio_feedback"].status.encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    app = FeedbackMiddleware(site, tracker)
    """
)


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        pytest.importorskip("sqlalchemy")
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.getfixturevalue("redis_url"))


def environment(fake: FakeTwilio, store_url: str, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(
        TWILIO_ACCOUNT_SID=fake.account_sid,
        TWILIO_AUTH_TOKEN=fake.auth_token,
        TWILIO_FEEDBACK_SECRET_KEY=SECRET_KEY,
        TWILIO_FEEDBACK_API_BASE_URL=fake.base_url,
        TWILIO_FEEDBACK_STORE=store_url,
        TWILIO_FEEDBACK_REPORTER="off",
        PYTHONWARNINGS="ignore",
    )
    env.update({f"TWILIO_FEEDBACK_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class Processes:
    """Child processes of one test, killed at its end if still running."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv, env=env, cwd=self.tmp_path, stdout=out, stderr=subprocess.STDOUT
            )
        self.running.append((process, log))
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.running)

    def close(self) -> None:
        for process, _ in self.running:
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    made = Processes(tmp_path)
    yield made
    made.close()


def get(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"User-Agent": CHROME})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def click_all(port: int, tokens: list[str], clients: int = 4) -> Counter[str]:
    """Open every link once, from ``clients`` keep-alive connections at once."""

    def click(share: list[str]) -> Counter[str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        answers: Counter[str] = Counter()
        try:
            for token in share:
                conn.request("GET", f"/confirm?id={token}", headers={"User-Agent": CHROME})
                answers[conn.getresponse().read().decode()] += 1
        finally:
            conn.close()
        return answers

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(click, [tokens[n::clients] for n in range(clients)]), Counter())


def test_reporter_off_web_processes_then_two_workers_report_each_message_once(
    store_url: str, fake_twilio: FakeTwilio, processes: Processes, tmp_path: Path
) -> None:
    # The messages and their links (what the app's send() does), bound in the store.
    sids = fake_twilio.add_messages(COUNT)
    settings = Settings.from_env(environment(fake_twilio, store_url))
    seeding = FeedbackTracker(settings)
    tokens = []
    for sid in sids:
        ticket = seeding.ticket()
        seeding.bind(ticket, sid)
        tokens.append(ticket.token)
    seeding.close()

    (tmp_path / "web.py").write_text(WEB_APP)
    port = free_port()
    env = environment(fake_twilio, store_url)
    web = processes.start(
        "web",
        [sys.executable, "-m", "uvicorn", "web:app", "--port", str(port), "--log-level", "error"],
        env,
    )

    def up() -> bool:
        assert web.poll() is None, processes.logs()
        try:
            return get(port, "/threads") == ""
        except OSError:
            return False

    wait_until(up, 30, "uvicorn start")
    answers = click_all(port, tokens)
    assert answers == Counter({"confirmed": COUNT}), answers
    assert get(port, "/threads") == ""  # no reporter, heartbeat, deferral or lookup thread
    assert fake_twilio.feedback == []  # no post from the web process
    store = store_from_url(store_url)
    try:
        assert store.counts()["confirmed"] == COUNT

        # Two workers share the outbox; one is stopped with SIGTERM mid-drain.
        fake_twilio.latency = 0.02
        worker = [sys.executable, "-m", "twilio_feedback.cli", "worker", "--concurrency", "8"]
        first = processes.start("worker-1", worker, env)
        second = processes.start("worker-2", worker, env)
        fake_twilio.wait_for_feedback(COUNT // 4, timeout=60)
        first.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        first_log = tmp_path / "worker-1.log"
        wait_until(lambda: "worker stopped" in first_log.read_text(), 30, "the first's stop")
        # Its posts in flight (20 ms each) finished and its queue handed back, not the drain.
        # Taken at its last log line: the interpreter's exit after it only measures how
        # loaded the machine is.
        assert time.monotonic() - stopping < 10
        assert len(fake_twilio.feedback) < COUNT, "the SIGTERM came after the drain"
        assert first.wait(30) == 0, processes.logs()
        fake_twilio.wait_for_feedback(COUNT, timeout=90)
        wait_until(lambda: store.counts()["reported"] == COUNT, 30, "every outcome recorded")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, processes.logs()
    finally:
        store.close()
    posts = Counter(post.message_sid for post in fake_twilio.feedback)
    assert posts == Counter(sids)  # every message, each exactly once
    assert "worker stopped:" in first_log.read_text()
