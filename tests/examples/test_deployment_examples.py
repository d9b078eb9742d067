"""The deployment recipes of docs/deployment.md, run: the serverless module (web function
and scheduled drain, a function frozen mid-post included), and the worker's command in
the systemd unit, the Procfile and the Kubernetes Deployment, parsed by the command's
own parser. examples/deployment/celery_tasks.py runs in tests/test_celery_e2e.py."""

from __future__ import annotations

import configparser
import importlib.util
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from twilio_feedback.cli import _parser
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.testing.fake_twilio import Hang
from twilio_feedback.tracker import key_tracking_id
from twilio_feedback.worker import GRACE

from ..conftest import CHROME, SECRET_KEY

DEPLOYMENT = Path(__file__).resolve().parents[2] / "examples" / "deployment"


def worker_args(argv: list[str]) -> Any:
    """The parsed command line of a ``twilio-feedback worker`` command."""
    assert Path(argv[0]).name == "twilio-feedback", argv
    args = _parser().parse_args(argv[1:])
    assert args.command == "worker"
    return args


def test_the_systemd_unit_runs_the_worker_and_waits_for_its_grace() -> None:
    unit = configparser.ConfigParser(interpolation=None)
    unit.read(DEPLOYMENT / "twilio-feedback-worker.service")
    service = unit["Service"]
    args = worker_args(shlex.split(service["ExecStart"]))
    assert args.concurrency == 8
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) > args.grace == GRACE


def test_the_procfile_runs_the_worker() -> None:
    lines = dict(
        line.split(":", 1) for line in (DEPLOYMENT / "Procfile").read_text().splitlines() if line
    )
    assert worker_args(shlex.split(lines["worker"])).concurrency == 8


def test_the_kubernetes_deployment_runs_the_worker_and_waits_for_its_grace() -> None:
    deployment = yaml.safe_load((DEPLOYMENT / "worker-deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = worker_args(container["command"])
    assert pod["terminationGracePeriodSeconds"] > args.grace


# -- serverless --------------------------------------------------------------------------


def library_threads() -> set[threading.Thread]:
    # The SQL store's own threads run only the calls a request awaits (as asyncio's
    # executor would), idle in between: not background work.
    return {
        t
        for t in threading.enumerate()
        if t.name.startswith("twilio-feedback") and t.name != "twilio-feedback-sql"
    }


@pytest.fixture
def serverless(
    fake_twilio: FakeTwilio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    pytest.importorskip("sqlalchemy")
    for name in list(os.environ):
        if name.startswith("TWILIO_"):
            monkeypatch.delenv(name)
    env = {
        "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
        "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
        "TWILIO_FEEDBACK_SECRET_KEY": SECRET_KEY,
        "TWILIO_FEEDBACK_API_BASE_URL": fake_twilio.base_url,
        "TWILIO_FEEDBACK_STORE": f"sqlite:///{tmp_path / 'feedback.db'}",
        "TWILIO_FEEDBACK_REPORTER": "off",
        "TWILIO_FEEDBACK_LEASE_SECONDS": "1",
        "TWILIO_FEEDBACK_REQUEST_TIMEOUT": "2",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location(
        "serverless_example", DEPLOYMENT / "serverless.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    before = library_threads()
    spec.loader.exec_module(module)
    sys.modules.pop("serverless_example", None)
    yield module
    module.tracker.close(timeout=1)
    assert library_threads() - before == set()


class Context:
    """What AWS Lambda hands a handler: the time left, in milliseconds."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


async def click(app: Any, token: str) -> str:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://app.example") as client:
        answer = await client.get("/confirm", params={"id": token}, headers={"User-Agent": CHROME})
    return answer.text


async def test_serverless_web_function_confirms_and_the_schedule_delivers(
    serverless: ModuleType, fake_twilio: FakeTwilio
) -> None:
    tracker = serverless.tracker
    before = library_threads()
    [sid] = fake_twilio.add_messages(1)
    ticket = tracker.ticket()
    tracker.bind(ticket, sid)
    assert await click(serverless.app, ticket.token) == "link: confirmed"
    assert library_threads() - before == set()  # nothing a frozen function would not run
    assert fake_twilio.feedback == []

    done = serverless.drain_handler({}, Context(seconds=30))
    assert done == {"taken": 1, "reported": 1, "failed": 0, "left": 0}
    assert [p.message_sid for p in fake_twilio.feedback] == [sid]
    assert library_threads() - before == set()  # the drain's threads ended with it


def test_a_function_frozen_mid_post_loses_nothing(
    serverless: ModuleType, fake_twilio: FakeTwilio
) -> None:
    tracker = serverless.tracker
    [sid] = fake_twilio.add_messages(1)
    tracker.bind(key="k", message_sid=sid)
    assert tracker.confirm(key="k").confirmed
    # The platform stops the run while Twilio has not answered: the post is cut off.
    fake_twilio.fail_next(Hang())
    started = time.monotonic()
    done = serverless.drain_handler({}, Context(seconds=serverless.SAFETY + 1))
    assert time.monotonic() - started < 3
    assert (done["taken"], done["reported"], done["left"]) == (1, 0, 1)
    fake_twilio.release()
    # Still confirmed in the store; the next scheduled run delivers it (once its lease,
    # last renewed before the freeze, has ended).
    deadline = time.monotonic() + 20
    while not fake_twilio.feedback and time.monotonic() < deadline:
        serverless.drain_handler({}, Context(seconds=serverless.SAFETY + 2))
    assert [p.message_sid for p in fake_twilio.feedback] == [sid]
    assert tracker.store.counts()["reported"] == 1


# -- your own client, a health endpoint ----------------------------------------------------


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", DEPLOYMENT / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_client_example_hands_its_client_to_the_tracker(
    fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_sid, key_secret = fake_twilio.add_api_key()
    for name in list(os.environ):
        if name.startswith("TWILIO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", fake_twilio.account_sid)
    monkeypatch.setenv("TWILIO_API_KEY", key_sid)
    monkeypatch.setenv("TWILIO_API_SECRET", key_secret)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # never reached: nothing is sent
    monkeypatch.setenv("TWILIO_FEEDBACK_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("TWILIO_FEEDBACK_STORE", "memory://?maxsize=10")
    with pytest.warns(UserWarning, match="in-memory store"):
        module = load("own_client")
    try:
        api = module.tracker.api
        assert api.client() is module.client
        assert (module.client.edge, module.client.region) == ("dublin", "ie1")
        assert module.client.http_client.proxy == {"https": "http://127.0.0.1:9"}
    finally:
        module.tracker.close(timeout=1)


async def test_health_endpoint_example_answers_200_then_503(
    fake_twilio: FakeTwilio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("TWILIO_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", fake_twilio.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", fake_twilio.auth_token)
    monkeypatch.setenv("TWILIO_FEEDBACK_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("TWILIO_FEEDBACK_STORE", f"sqlite:///{tmp_path / 'f.db'}")
    monkeypatch.setenv("TWILIO_FEEDBACK_REPORTER", "off")  # nothing delivers: it falls behind
    module = load("health_check")
    transport = httpx.ASGITransport(app=module.health)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            answer = await client.get("/health")
            assert (answer.status_code, answer.json()["state"]) == (200, "ok")
            now = time.time()
            tracker = module.tracker
            tracker.bind(key="k", message_sid=fake_twilio.add_messages(1)[0])
            tracker.store.confirm(
                key_tracking_id("k"),
                now=now - 600,
                lease_until=now,
                keep_until=now + 3600,
            )
            answer = await client.get("/health")
            assert answer.status_code == 503
            assert answer.json()["state"] == "behind"
            assert answer.json()["oldest_unreported_age"] >= 600
    finally:
        module.tracker.close(timeout=1)
