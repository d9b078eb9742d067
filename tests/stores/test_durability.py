"""Several processes, crashes and outages, on real servers; takeover after a crash and
a slow process keeping its own records, at default settings."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from twilio_feedback import FeedbackTracker, Record, Settings, State
from twilio_feedback.stores import store_from_url
from twilio_feedback.stores.redis import RedisStore
from twilio_feedback.stores.sql import SQLStore
from twilio_feedback.testing import Delay, FakeTwilio, Status

from ..conftest import SECRET_KEY
from ..servers import PostgresServer, RedisServer, wait_until

ROOT = Path(__file__).resolve().parents[2]
SID = "SM" + "a" * 32

SERVERS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]
DURABLE = ["sqlite", *SERVERS]


def _child(*args: str, stderr: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.stores.child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def _url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{request.getfixturevalue('tmp_path')}/feedback.db"
    return str(request.getfixturevalue(f"{backend}_url"))


def _settings(fake: FakeTwilio, store: Any, **extra: Any) -> Settings:
    return Settings(
        account_sid=fake.account_sid,
        auth_token=fake.auth_token,
        secret_key=SECRET_KEY,
        store=store,
        api_base_url=fake.base_url,
        **extra,
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", DURABLE)
def test_eight_processes_ten_threads_confirm_each_token_once(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = _url(backend, request)
    store = store_from_url(url)
    ids = [f"race{n}" for n in range(100)]
    for tracking_id in ids:
        store.add(Record(tracking_id, expires_at=time.time() + 600, message_sid=SID))
    args = json.dumps({"url": url, "ids": ids, "threads": 10})
    children = [_child("race", args, stderr=subprocess.PIPE) for _ in range(8)]
    wins = 0
    for child in children:
        out, err = child.communicate(timeout=100)  # closes the pipes
        assert child.returncode == 0, err
        wins += json.loads(out.strip().splitlines()[-1])["wins"]
    assert wins == 100
    assert store.counts()["confirmed"] == 100
    assert all((r := store.get(i)) is not None and r.state is State.CONFIRMED for i in ids)
    store.close()


# -- takeover at default settings (DESIGN.md, reliability targets) ------------------------

TAKEOVER = 30.0
"""A dead process's confirmations are reported within 30 s of its death."""
WAKE_MARGIN = 1.0
"""Slack for the waiting itself: the test's thread waking on the emulator's condition on a
loaded machine. The deadline proper is checked on the emulator's own timestamps."""


def _defaults(fake: FakeTwilio, store: str, **extra: Any) -> dict[str, Any]:
    """Settings for a child process: the emulator and a store, every other field default
    (but ``extra``)."""
    return {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "secret_key": SECRET_KEY,
        "store": store,
        "api_base_url": fake.base_url,
        **extra,
    }


def _namespaces(backend: str) -> tuple[str, str]:
    """Two independent stores on one server: a table each on SQL, a prefix each on Redis."""
    if backend == "redis":
        return "prefix=shared:", "prefix=restart:"
    return "table=shared_records", "table=restart_records"


def _reporter(
    fake: FakeTwilio, store: str, confirm: list[str], **extra: Any
) -> subprocess.Popen[str]:
    """A child with a tracker on ``store`` that confirms ``confirm`` (message SIDs) and
    then lives until it is killed; it has printed "ready" when this returns."""
    pairs = [[f"k{sid}", sid] for sid in confirm]
    settings = _defaults(fake, store, **extra)
    child = _child("reporter", json.dumps({"settings": settings, "confirm": pairs}))
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def _feedback_path(sid: str) -> str:
    return f"/Messages/{sid}/Feedback.json"


def _stop(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        child.kill()
        child.wait(10)
        if child.stdout:
            child.stdout.close()


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_killed_processes_confirmations_are_reported_within_30_s(
    request: pytest.FixtureRequest, fake_twilio: FakeTwilio
) -> None:
    """At default settings, processes are SIGKILLed while Twilio is down and their retries
    wait. On each of SQLite, PostgreSQL and Redis, one shared its store with a live
    process and one is restarted: every confirmation is reported within 30 s of the kill.
    The backends run side by side: the wait is the leases', not the CPU's."""
    scenarios: dict[str, tuple[str, list[str]]] = {}  # name -> (store URL, message SIDs)
    for backend in ("sqlite", "postgres", "redis"):
        url = _url(backend, request)
        shared, restarted_on = (f"{url}?{query}" for query in _namespaces(backend))
        scenarios[f"{backend}, live"] = (shared, fake_twilio.add_messages(5))
        scenarios[f"{backend}, restarted"] = (restarted_on, fake_twilio.add_messages(5))
    every = {sid: name for name, (_, sids) in scenarios.items() for sid in sids}
    fake_twilio.fail_always(503)
    children: list[subprocess.Popen[str]] = []
    try:
        children += [
            _reporter(fake_twilio, store, [])
            for name, (store, _) in scenarios.items()
            if "live" in name
        ]
        doomed = [_reporter(fake_twilio, store, sids) for store, sids in scenarios.values()]
        children += doomed

        def retrying() -> bool:
            failed = [r.path for r in fake_twilio.requests if r.status == 503]
            return all(sum(p.endswith(_feedback_path(s)) for p in failed) >= 2 for s in every)

        # Every confirmation failed twice: its next retry is waiting when the kill comes.
        assert fake_twilio.wait_for(retrying, 30)
        killed_at = time.time()
        for child in doomed:
            child.send_signal(signal.SIGKILL)
        for child in doomed:
            assert child.wait(10) == -signal.SIGKILL
        fake_twilio.clear_faults()
        children += [
            _reporter(fake_twilio, store, [])
            for name, (store, _) in scenarios.items()
            if "restarted" in name
        ]

        def missing() -> set[str]:
            return {
                every[sid] for sid in set(every) - {p.message_sid for p in fake_twilio.feedback}
            }

        deadline = killed_at + TAKEOVER + WAKE_MARGIN
        fake_twilio.wait_for(lambda: not missing(), max(0.0, deadline - time.time()))
        assert not missing(), f"not reported within {TAKEOVER} s of the kill: {missing()}"
        first: dict[str, float] = {}
        for post in fake_twilio.feedback:
            first.setdefault(post.message_sid, post.time)
        late = {
            every[sid]: round(at - killed_at, 1)
            for sid, at in first.items()
            if at - killed_at > TAKEOVER
        }
        assert not late, f"reported more than {TAKEOVER} s after the kill: {late}"
        for store, sids in scenarios.values():
            _wait_reported(store, len(sids))
    finally:
        _stop(children)


def _wait_reported(url: str, count: int) -> None:
    store = store_from_url(url)
    try:
        wait_until(lambda: store.counts()["reported"] == count, 30, f"{count} reported")
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_slow_live_process_keeps_its_own_records(tmp_path: Path, fake_twilio: FakeTwilio) -> None:
    """With Twilio taking 20 s per post (longer than a lease) and a Retry-After of 25 s,
    another process sweeping the same store never posts the first one's records: each
    message is posted once (twice for the rate-limited one). Default settings but
    ``request_timeout``: a post Twilio answers in 20 s needs one above 20 s (at 10 s it
    times out, and the same process posts it again)."""
    store = f"sqlite:///{tmp_path / 'feedback.db'}"
    sids = fake_twilio.add_messages(6)
    # The first post: 429, retry in 25 s; the next four: 20 s before Twilio answers; then
    # at once. With 4 workers, 4 posts are in flight and 1 is queued for 20 s, and 1 waits
    # 25 s for its retry: the other process sweeps (every 10 s) at least once after its
    # lease would have run out (15 s) without the heartbeat.
    fake_twilio.fail_next(Status(429, retry_after=25), *[Delay(20)] * 4)
    children: list[subprocess.Popen[str]] = []
    try:
        other = _reporter(fake_twilio, store, [], request_timeout=30)
        children.append(other)
        children.append(_reporter(fake_twilio, store, sids, request_timeout=30))
        fake_twilio.wait_for_requests(lambda r: r.status == 429, timeout=10)
        (limited,) = (
            s
            for s in sids
            for r in fake_twilio.requests
            if r.status == 429 and r.path.endswith(_feedback_path(s))
        )

        def retried() -> bool:
            statuses = [r.status for r in fake_twilio.requests if limited in r.path]
            return statuses[-1:] == [200] and len(fake_twilio.feedback) >= len(sids)

        # Everything reported, the rate-limited record by its own retry, 25 s on.
        assert fake_twilio.wait_for(retried, 60)
        other.send_signal(signal.SIGTERM)
        assert other.stdout is not None
        assert json.loads(other.stdout.readline())["swept"] == 0
        posts = Counter(
            s for r in fake_twilio.requests for s in sids if r.path.endswith(_feedback_path(s))
        )
        assert posts == {s: 2 if s == limited else 1 for s in sids}
        assert Counter(p.message_sid for p in fake_twilio.feedback) == dict.fromkeys(sids, 1)
    finally:
        fake_twilio.clear_faults()
        _stop(children)


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_one_sql_statement_per_confirm(backend: str, request: pytest.FixtureRequest) -> None:
    store = store_from_url(_url(backend, request))
    assert isinstance(store, SQLStore)
    now = time.time()
    store.add(Record("x", expires_at=now + 60, message_sid=SID))
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)
        # On a server, no BEGIN/COMMIT round trips around it either.
        if backend == "postgres":
            assert conn.connection.dbapi_connection.autocommit

    event.listen(store.engine, "before_cursor_execute", count)
    won, _ = store.confirm("x", now=now, lease_until=now + 60, keep_until=now + 60)
    assert won
    assert len(statements) == 1, statements
    statements.clear()
    lost, record = store.confirm("x", now=now, lease_until=now + 60, keep_until=now + 60)
    assert not lost
    assert record is not None
    assert record.state is State.CONFIRMED
    # PostgreSQL answers a loser in the same statement (a CTE); SQLite, in process, reads.
    assert len(statements) == (1 if backend == "postgres" else 2), statements
    store.close()


@pytest.mark.redis
@pytest.mark.parametrize("client", ["lean", "redis-py"])
def test_one_redis_round_trip_per_confirm(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, client: str
) -> None:
    import redis
    import redis.connection

    # Built from the URL: the lean connections (with hiredis); given a client: redis-py's.
    if client == "lean":
        pytest.importorskip("hiredis")
        from twilio_feedback.stores._resp import _SyncConnection

        store = RedisStore(redis_url)
        writer: Any = _SyncConnection
        method = "request"
    else:
        store = RedisStore(redis.Redis.from_url(redis_url))
        writer = redis.connection.Connection
        method = "send_packed_command"
    now = time.time()
    store.add(Record("x", expires_at=now + 60, message_sid=SID))
    store.confirm("x", now=now, lease_until=now + 60, keep_until=now + 60)  # loads the script
    store.add(Record("y", expires_at=now + 60, message_sid=SID))
    sent: list[object] = []
    original: Any = getattr(writer, method)

    def counting(self: Any, command: Any, *args: Any, **options: Any) -> Any:
        sent.append(command)
        return original(self, command, *args, **options)

    with redis.Redis.from_url(redis_url) as observer:
        before = observer.info("commandstats")
        monkeypatch.setattr(writer, method, counting)
        won, _ = store.confirm("y", now=now, lease_until=now + 60, keep_until=now + 60)
        lost, _ = store.confirm("y", now=now, lease_until=now + 60, keep_until=now + 60)
        monkeypatch.undo()
        after = observer.info("commandstats")
    assert (won, lost) == (True, False)
    assert len(sent) == 2  # one packet each
    # The server ran the cached script twice: no EVAL or SCRIPT LOAD fallback. (Its
    # commandstats also count the commands the script ran inside the server.)
    calls = {
        name: stats["calls"] - before.get(name, {"calls": 0})["calls"]
        for name, stats in after.items()
    }
    assert calls["cmdstat_evalsha"] == 2
    assert calls.get("cmdstat_eval", 0) == calls.get("cmdstat_script|load", 0) == 0
    store.close()
    if client == "redis-py":
        store.client.close()


# -- the store down at confirm time -----------------------------------------------------


def _server(backend: str) -> tuple[Any, str]:
    if backend == "redis":
        redis_server = RedisServer(persistent=True)
        return redis_server, redis_server.url
    pg_server = PostgresServer()
    return pg_server, pg_server.fresh_database()


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", SERVERS)
async def test_store_down_at_confirm_time_is_deferred_and_loses_nothing(
    backend: str, fake_twilio: FakeTwilio
) -> None:
    server, url = _server(backend)
    sids = fake_twilio.add_messages(3)
    tracker = FeedbackTracker(_settings(fake_twilio, url))
    try:
        for name, sid in zip(("before", "during", "async"), sids, strict=True):
            tracker.bind(key=name, message_sid=sid)
        assert tracker.confirm(key="before").confirmed
        fake_twilio.wait_for_feedback(1, timeout=30)
        server.halt()

        started = time.monotonic()
        assert tracker.confirm(key="during").status == "deferred"
        assert (await tracker.confirm_async(key="async")).status == "deferred"
        assert time.monotonic() - started < 2.0  # kept at once, no retry on the request path

        server.start()
        assert tracker.confirm(key="before").status == "duplicate"  # still confirmed
        wait_until(lambda: tracker.stats()["replayed"] == 2, 30, "deferred confirmations applied")
        assert tracker.confirm(key="during").status == "duplicate"
        assert (await tracker.confirm_async(key="async")).status == "duplicate"
        posts = fake_twilio.wait_for_feedback(3, timeout=30)
        assert sorted(p.message_sid for p in posts) == sorted(sids)
    finally:
        await tracker.aclose(timeout=2)
        server.stop()


def test_store_at_a_closed_port_is_refused_at_once(fake_twilio: FakeTwilio) -> None:
    pytest.importorskip("redis")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        for url in (
            f"redis://127.0.0.1:{port}/0",
            f"postgresql://postgres@127.0.0.1:{port}/postgres",
        ):
            tracker = FeedbackTracker(_settings(fake_twilio, url))
            started = time.monotonic()
            try:
                assert tracker.confirm(key="k").status == "deferred"
                assert time.monotonic() - started < 2.0
            finally:
                tracker.close(timeout=1)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except TimeoutError:
                    continue
                except OSError:
                    return

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        yield listener.getsockname()[1]
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "bound"),
    [
        (lambda port: RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout=0.5), 0.5),
        (lambda port: SQLStore(f"postgresql://u@127.0.0.1:{port}/db", connect_timeout=2), 2.0),
    ],
    ids=["redis", "postgres"],
)
def test_a_store_that_never_answers_costs_one_timeout(
    make: Any, bound: float, silent_server: int, fake_twilio: FakeTwilio
) -> None:
    tracker = FeedbackTracker(_settings(fake_twilio, make(silent_server)))
    started = time.monotonic()
    try:
        assert tracker.confirm(key="k").status == "deferred"
        elapsed = time.monotonic() - started
        assert bound * 0.8 <= elapsed < bound * 2 + 1, elapsed
    finally:
        tracker.close(timeout=1)


def test_store_urls_carry_timeouts() -> None:
    store = RedisStore("redis://127.0.0.1:1/0?socket_timeout=0.25&prefix=app:")
    kwargs = store.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.25
    assert kwargs["socket_connect_timeout"] == 2.0
    if store._lean is not None:  # hiredis installed: the lean connections' too
        assert (store._lean.timeout, store._lean.connect_timeout) == (0.25, 2.0)
    assert store.prefix == "app:"
    store.close()
    sql = SQLStore("postgresql://u@127.0.0.1:1/db?connect_timeout=7")
    assert sql.engine.url.query["connect_timeout"] == "7"
    sql.close()
