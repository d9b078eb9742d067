"""``reporter="celery"`` with real processes: an app confirming under uvicorn, a real Celery
worker (prefork pool) and a real Redis broker; FakeTwilio counts the posts. Every
confirmation is reported once; Twilio's 429 with Retry-After is honoured; a worker killed
mid-task (SIGKILL to its process group) loses nothing: the periodic drain (celery beat)
takes over what the dead worker held once its lease ends."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.stores.base import store_from_url
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.testing.fake_twilio import Hang, Status

from .conftest import CHROME, SECRET_KEY
from .servers import RedisServer, free_port, wait_until

pytest.importorskip("celery")
pytest.importorskip("redis")
pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "deployment" / "celery_tasks.py"

WEB = textwrap.dedent(
    """
    import threading
    import celery_tasks  # the Celery app, set up: what reporter="celery" sends to
    from twilio_feedback import FeedbackTracker
    from twilio_feedback.asgi import FeedbackMiddleware

    tracker = FeedbackTracker()  # TWILIO_FEEDBACK_REPORTER=celery

    async def site(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/threads":
            names = [t.name for t in threading.enumerate() if t.name.startswith("twilio-")]
            body = ",".join(names).encode()
        else:
            body = scope["twilio_feedback"].status.encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    app = FeedbackMiddleware(site, tracker)
    """
)


class Deployment:
    """The processes of one test: uvicorn serving WEB, Celery workers running the example's
    Celery app (the periodic drain every second)."""

    def __init__(self, tmp_path: Path, fake: FakeTwilio, redis: RedisServer, **settings: object):
        redis.flush()
        self.tmp_path = tmp_path
        self.fake = fake
        self.store_url = redis.url  # db 0; the broker uses db 1
        shutil.copy(EXAMPLE, tmp_path / "celery_tasks.py")
        (tmp_path / "web.py").write_text(WEB)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
        self.env.update(
            TWILIO_ACCOUNT_SID=fake.account_sid,
            TWILIO_AUTH_TOKEN=fake.auth_token,
            TWILIO_FEEDBACK_SECRET_KEY=SECRET_KEY,
            TWILIO_FEEDBACK_API_BASE_URL=fake.base_url,
            TWILIO_FEEDBACK_STORE=self.store_url,
            TWILIO_FEEDBACK_REPORTER="celery",
            CELERY_BROKER_URL=redis.url.rsplit("/", 1)[0] + "/1",
            DRAIN_EVERY="1",
            PYTHONPATH=str(tmp_path),
            PYTHONWARNINGS="ignore",
        )
        self.env.update({f"TWILIO_FEEDBACK_{k.upper()}": str(v) for k, v in settings.items()})
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.port = free_port()

    def _start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.tmp_path,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the pool goes with it
            )
        self.processes.append((process, log))
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for _, log in self.processes)

    def web(self) -> None:
        process = self._start(
            "web",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "web:app",
                "--port",
                str(self.port),
                "--log-level=error",
            ],
        )

        def up() -> bool:
            assert process.poll() is None, self.logs()
            try:
                return self.get("/threads") == ""
            except OSError:
                return False

        wait_until(up, 30, "uvicorn start")

    def worker(self, name: str, *, beat: bool = False) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--loglevel=INFO"]
        argv += ["--pool=prefork", "--concurrency=2", "--without-gossip", "--without-mingle"]
        argv += ["--hostname", f"{name}@%h"]
        if beat:
            argv.append("--beat")
        process = self._start(name, argv)
        log = self.tmp_path / f"{name}.log"
        wait_until(lambda: "ready." in log.read_text(), 60, f"celery worker {name} ready")
        assert process.poll() is None, self.logs()
        return process

    def get(self, path: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"User-Agent": CHROME})
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def links(self, count: int) -> tuple[list[str], list[str]]:
        """``count`` messages bound to fresh tokens, as the app's send() would leave them."""
        sids = self.fake.add_messages(count)
        settings = Settings.from_env({**self.env, "TWILIO_FEEDBACK_REPORTER": "off"})
        seeding = FeedbackTracker(settings)
        tokens = []
        for sid in sids:
            ticket = seeding.ticket()
            seeding.bind(ticket, sid)
            tokens.append(ticket.token)
        seeding.close()
        return sids, tokens

    def click(self, tokens: list[str]) -> Counter[str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        answers: Counter[str] = Counter()
        try:
            for token in tokens:
                conn.request("GET", f"/confirm?id={token}", headers={"User-Agent": CHROME})
                answers[conn.getresponse().read().decode()] += 1
        finally:
            conn.close()
        return answers

    def reported(self) -> int:
        store = store_from_url(self.store_url)
        try:
            return store.counts()["reported"]
        finally:
            store.close()

    def close(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


@pytest.fixture
def deploy(
    tmp_path: Path, fake_twilio: FakeTwilio, redis_server: RedisServer
) -> Iterator[type[Deployment]]:
    made: list[Deployment] = []

    class Made(Deployment):
        def __init__(self, **settings: object) -> None:
            super().__init__(tmp_path, fake_twilio, redis_server, **settings)
            made.append(self)

    yield Made
    for deployment in made:
        deployment.close()


def test_every_confirmation_is_reported_once_and_retry_after_is_honoured(
    deploy: type[Deployment], fake_twilio: FakeTwilio
) -> None:
    count = 200
    app = deploy()
    app.worker("w1")
    app.web()
    sids, tokens = app.links(count)
    fake_twilio.fail_next(Status(429, retry_after=2))  # the first post: Twilio says wait 2 s
    assert app.click(tokens) == Counter({"confirmed": count})
    fake_twilio.wait_for_feedback(count, timeout=60)
    assert Counter(p.message_sid for p in fake_twilio.feedback) == Counter(sids)
    wait_until(lambda: app.reported() == count, 20, "every outcome written")
    posts = [r for r in fake_twilio.requests if r.path.endswith("/Feedback.json")]
    [refused] = [r for r in posts if r.status == 429]
    again = next(r for r in posts if r.path == refused.path and r.status == 200)
    assert again.time - refused.time >= 2.0, "Celery's retry came before Retry-After"
    assert app.get("/threads") == ""  # the web process runs no reporter thread
    assert "Retry in" in (app.tmp_path / "w1.log").read_text()  # Celery's own retry


def test_a_worker_killed_mid_task_loses_nothing(
    deploy: type[Deployment], fake_twilio: FakeTwilio
) -> None:
    # Short leases, so the drain takes over what the dead worker held in seconds.
    app = deploy(lease_seconds=1, request_timeout=1)
    first = app.worker("w1")
    app.web()
    sids, tokens = app.links(20)
    fake_twilio.fail_next(Hang(), Hang())  # both pool processes stuck in a post...
    assert app.click(tokens) == Counter({"confirmed": 20})
    assert fake_twilio.wait_for(lambda: fake_twilio.in_flight == 2, 60), app.logs()
    os.killpg(first.pid, signal.SIGKILL)  # ... when the worker dies
    first.wait(10)
    fake_twilio.release()  # the hung posts end unanswered: Twilio never took them
    # The tasks it had taken died with it (acked early); the ones still queued, and the
    # periodic drain for the rest, go to the next worker.
    app.worker("w2", beat=True)
    fake_twilio.wait_for(lambda: {p.message_sid for p in fake_twilio.feedback} == set(sids), 60)
    assert {p.message_sid for p in fake_twilio.feedback} == set(sids), app.logs()
    wait_until(lambda: app.reported() == 20, 20, "every outcome written")
