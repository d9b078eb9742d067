"""Several processes, crashes and outages, on real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest
from sqlalchemy import event

from twilio_feedback import FeedbackTracker, Record, Settings
from twilio_feedback.stores import store_from_url
from twilio_feedback.stores.redis import RedisStore
from twilio_feedback.stores.sql import SQLStore
from twilio_feedback.testing import FakeTwilio

from ..conftest import SECRET_KEY
from ..servers import PostgresServer, RedisServer, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stores.child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )


def _url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp()}/feedback.db"
    return str(request.getfixturevalue(f"{backend}_url"))


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
def test_eight_processes_ten_threads_confirm_each_token_once(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = _url(backend, request)
    store = store_from_url(url)
    ids = [f"race{n}" for n in range(100)]
    for tracking_id in ids:
        store.add(Record(tracking_id, expires_at=time.time() + 600, message_sid="SM" + "a" * 32))
    children = [
        _child("race", json.dumps({"url": url, "ids": ids, "threads": 10})) for _ in range(8)
    ]
    wins = 0
    for child in children:
        out, _ = child.communicate(timeout=100)  # closes the pipe
        assert child.returncode == 0
        wins += json.loads(out.strip().splitlines()[-1])["wins"]
    assert wins == 100
    assert store.counts()["confirmed"] == 100
    store.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ],
)
def test_sigkill_while_twilio_is_down_loses_nothing(
    backend: str, request: pytest.FixtureRequest, fake_twilio: FakeTwilio
) -> None:
    url = _url(backend, request)
    client = fake_twilio.client()
    sids = [
        client.messages.create(to="+15558675310", from_="+1501", body="x").sid for _ in range(10)
    ]
    settings: dict[str, Any] = {
        "account_sid": fake_twilio.account_sid,
        "auth_token": fake_twilio.auth_token,
        "secret_key": SECRET_KEY,
        "store": url,
        "api_base_url": fake_twilio.base_url,
        "lease_seconds": 1.0,
        "sweep_interval": 0.2,
        "request_timeout": 2.0,
    }
    fake_twilio.fail_always(503)
    first = _child(
        "reporter",
        json.dumps({"settings": settings, "confirm": [[f"k{n}", s] for n, s in enumerate(sids)]}),
    )
    assert first.stdout is not None
    assert first.stdout.readline().strip() == "ready"
    fake_twilio.wait_for_requests(3, timeout=10)  # it is trying, and failing
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert fake_twilio.feedback == []

    fake_twilio.clear_faults()
    second = _child("reporter", json.dumps({"settings": settings, "confirm": []}))
    try:
        posts = fake_twilio.wait_for_feedback(10, timeout=30)
        assert {p.message_sid for p in posts} == set(sids)
        store = store_from_url(url)
        wait_until(lambda: store.counts()["reported"] == 10, 10, "all records reported")
        store.close()
    finally:
        for child in (first, second):
            child.kill()
            child.wait(10)
            if child.stdout:
                child.stdout.close()


def test_one_sql_statement_per_confirm(request: pytest.FixtureRequest) -> None:
    backends = ["sqlite"]
    if not os.environ.get("TF_SKIP_PG"):
        backends.append("postgres")
    for backend in backends:
        store = store_from_url(_url(backend, request))
        assert isinstance(store, SQLStore)
        now = time.time()
        store.add(Record("x", expires_at=now + 60, message_sid="SM" + "a" * 32))
        statements: list[str] = []

        def count(*args: Any, seen: list[str] = statements) -> None:
            seen.append(args[2])

        event.listen(store.engine, "before_cursor_execute", count)
        if backend == "postgres":  # a server: no BEGIN/COMMIT round trips either

            def autocommit(conn: Any, *args: Any, seen: list[str] = statements) -> None:
                if not conn.connection.dbapi_connection.autocommit:
                    seen.append("BEGIN")

            event.listen(store.engine, "before_cursor_execute", autocommit)
        won, _ = store.confirm("x", now=now, lease_until=now + 60, keep_until=now + 60)
        assert won
        assert len(statements) == 1, statements
        if backend == "postgres":
            statements.clear()
            lost, record = store.confirm("x", now=now, lease_until=now + 60, keep_until=now + 60)
            assert not lost
            assert record is not None
            assert len(statements) == 1
        store.close()


@pytest.mark.redis
def test_one_redis_round_trip_per_confirm(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis.connection

    store = RedisStore(redis_url)
    now = time.time()
    store.add(Record("x", expires_at=now + 60, message_sid="SM" + "a" * 32))
    store.confirm("x", now=now, lease_until=now + 60, keep_until=now + 60)  # loads the script
    store.add(Record("y", expires_at=now + 60, message_sid="SM" + "a" * 32))
    sent: list[object] = []
    original = redis.connection.Connection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counting)
    won, _ = store.confirm("y", now=now, lease_until=now + 60, keep_until=now + 60)
    assert won
    assert len(sent) == 1
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "server_class",
    [
        pytest.param(RedisServer, marks=pytest.mark.redis),
        pytest.param(PostgresServer, marks=pytest.mark.postgres),
    ],
)
async def test_store_down_at_confirm_time_is_an_error_result(
    server_class: type[Any], fake_twilio: FakeTwilio
) -> None:
    server = server_class()
    url = server.url if server_class is RedisServer else server.fresh_database()
    settings = Settings(
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        secret_key=SECRET_KEY,
        store=url,
        api_base_url=fake_twilio.base_url,
    )
    tracker = FeedbackTracker(settings)
    tracker.bind(key="before", message_sid="SM" + "b" * 32)
    server.stop()
    started = time.monotonic()
    assert tracker.confirm(key="before").status == "error"
    assert (await tracker.confirm_async(key="before")).status == "error"
    assert time.monotonic() - started < 10
    tracker.close(timeout=1)
