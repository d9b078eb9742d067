"""The Redis store's lean paths (stores/_resp.py): the async twin's one pipelined hiredis
connection, the sync store's blocking ones."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from twilio_feedback import Record
from twilio_feedback.stores.redis import AsyncRedisStore, RedisStore

from ..servers import RedisServer, wait_until
from .child import in_forked_child

pytestmark = pytest.mark.redis

hiredis = pytest.importorskip("hiredis")

SID = "SM" + "a" * 32


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url)
    yield store
    store.close()


def _lean(store: RedisStore) -> AsyncRedisStore:
    from twilio_feedback.stores._resp import RespClient

    twin = store.as_async()
    assert isinstance(twin, AsyncRedisStore)
    assert isinstance(twin.client, RespClient)
    return twin


def _add(store: RedisStore, *ids: str) -> float:
    now = time.time()
    for tracking_id in ids:
        store.add(Record(tracking_id, expires_at=now + 600, message_sid=SID, created_at=now))
    return now


def _connections(store: RedisStore) -> int:
    return int(store.client.info("stats")["total_connections_received"])


async def test_concurrent_calls_share_one_connection_each_with_its_own_answer(
    store: RedisStore,
) -> None:
    twin = _lean(store)
    ids = [f"t{n}" for n in range(300)]
    now = _add(store, *ids[:200])  # the last 100 are unknown
    for tracking_id in ids[:50]:  # already confirmed: duplicates
        assert store.confirm(tracking_id, now=now, lease_until=now, keep_until=now)[0]
    before = _connections(store)

    async def confirm(tracking_id: str) -> tuple[str, bool, str | None]:
        won, record = await twin.confirm(tracking_id, now=now, lease_until=now, keep_until=now)
        return tracking_id, won, record.tracking_id if record is not None else None

    results = await asyncio.gather(*(confirm(tracking_id) for tracking_id in ids))
    expected = [(t, False, t) for t in ids[:50]]
    expected += [(t, True, t) for t in ids[50:200]]
    expected += [(t, False, None) for t in ids[200:]]
    assert results == expected
    assert _connections(store) - before == 1
    await twin.aclose()


async def test_calls_cancelled_while_waiting_leave_the_others_their_answers(
    store: RedisStore,
) -> None:
    twin = _lean(store)
    ids = [f"t{n}" for n in range(20)]
    now = _add(store, *ids)
    assert await twin.confirm("unknown", now=now, lease_until=now, keep_until=now) == (False, None)
    calls = [
        asyncio.ensure_future(twin.confirm(t, now=now, lease_until=now, keep_until=now))
        for t in ids
    ]
    await asyncio.sleep(0)  # one turn of the loop, not a wait: each call written, none read
    for call in calls[::2]:
        call.cancel()
    answers = await asyncio.gather(*calls[1::2])
    assert [record.tracking_id for _, record in answers if record] == ids[1::2]
    # The next calls read their own replies, not the cancelled calls'.
    won, record = await twin.confirm("t0", now=now, lease_until=now, keep_until=now)
    assert won is False  # the cancelled call did run in Redis
    assert record is not None
    assert record.tracking_id == "t0"
    assert (await twin.confirm("unknown", now=now, lease_until=now, keep_until=now)) == (
        False,
        None,
    )
    await twin.aclose()


async def test_scripts_flushed_from_redis_are_loaded_again(store: RedisStore) -> None:
    twin = _lean(store)
    now = _add(store, "a", "b")
    assert (await twin.confirm("a", now=now, lease_until=now, keep_until=now))[0]
    store.client.script_flush()
    # Several at once, all answered NOSCRIPT: each loads the script again and runs.
    results = await asyncio.gather(
        *(twin.confirm(t, now=now, lease_until=now, keep_until=now) for t in ("a", "b", "c"))
    )
    assert [won for won, _ in results] == [False, True, False]
    await twin.aclose()


@pytest.mark.slow
async def test_calls_after_a_redis_restart_reconnect() -> None:
    import redis.exceptions

    server = RedisServer(persistent=True)
    try:
        store = RedisStore(server.url)
        twin = _lean(store)
        ids = [f"t{n}" for n in range(30)]
        now = _add(store, *ids)

        async def confirm(tracking_id: str) -> bool:
            won, _ = await twin.confirm(tracking_id, now=now, lease_until=now, keep_until=now)
            return won

        assert all(await asyncio.gather(*(confirm(t) for t in ids[:10])))
        server.halt()
        with pytest.raises(redis.exceptions.ConnectionError):
            await confirm(ids[10])
        server.start()
        assert await asyncio.gather(*(confirm(t) for t in ids[10:])) == [True] * 20
        await twin.aclose()
        store.close()
    finally:
        server.stop()


async def test_a_call_that_times_out_fails_and_later_calls_work(redis_url: str) -> None:
    import redis
    import redis.exceptions

    store = RedisStore(f"{redis_url}?socket_timeout=0.2")
    twin = _lean(store)
    now = _add(store, "a", "b", "c", "d")
    assert (await twin.confirm("a", now=now, lease_until=now, keep_until=now))[0]
    admin = redis.Redis.from_url(redis_url)
    admin.client_pause(10_000, all=False)  # every client's writes (scripts too) wait
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(twin.confirm(t, now=now, lease_until=now, keep_until=now) for t in ("b", "c")),
            return_exceptions=True,
        )
        assert time.monotonic() - started < 5  # not the pause's 10 s
        assert all(isinstance(r, redis.exceptions.TimeoutError) for r in results), results
    finally:
        admin.client_unpause()
        admin.close()
    won, record = await twin.confirm("d", now=now, lease_until=now, keep_until=now)
    assert won
    assert record is not None
    assert record.tracking_id == "d"
    await twin.aclose()
    store.close()


@pytest.fixture
def acl_redis() -> Iterator[str]:
    """A Redis with a password for the default user and an ACL user ``app``; its
    ``host:port``."""
    import redis

    server = RedisServer()
    try:
        with redis.Redis.from_url(server.url) as admin:
            admin.acl_setuser(
                "app", enabled=True, passwords=["+s3cret-app"], keys="*", commands=["+@all"]
            )
            admin.config_set("requirepass", "s3cret-default")
        yield f"127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.mark.slow
async def test_auth_and_a_database_from_the_url(acl_redis: str) -> None:
    import redis
    import redis.exceptions

    base = acl_redis
    for url, db in (
        (f"redis://:s3cret-default@{base}/3", 3),
        (f"redis://app:s3cret-app@{base}/5", 5),
    ):
        store = RedisStore(url)
        twin = _lean(store)
        now = time.time()
        await twin.add(Record("x", expires_at=now + 60, message_sid=SID, created_at=now))
        assert (await twin.confirm("x", now=now, lease_until=now, keep_until=now))[0]
        await twin.aclose()
        store.close()
        with redis.Redis.from_url(f"redis://:s3cret-default@{base}/{db}") as check:
            assert check.exists("twilio_feedback:r:x") == 1
    wrong = RedisStore(f"redis://app:wrong-pass@{base}/0")
    twin = _lean(wrong)
    with pytest.raises(redis.exceptions.AuthenticationError) as failed:
        await twin.confirm("x", now=now, lease_until=now, keep_until=now)
    assert "wrong-pass" not in str(failed.value)
    await twin.aclose()
    wrong.close()


@pytest.mark.parametrize(
    "url",
    [
        "rediss://cache.example:6380/0",
        "unix:///tmp/redis.sock?db=0",
        "redis://127.0.0.1:6379/0?health_check_interval=5",
        "redis://127.0.0.1:6379/0?protocol=3",
    ],
)
async def test_other_urls_stay_on_redis_py_sync_and_async(url: str) -> None:
    import redis.asyncio

    store = RedisStore(url)
    twin = store.as_async()
    assert isinstance(twin, AsyncRedisStore)
    assert isinstance(twin.client, redis.asyncio.Redis)
    assert store._lean is None
    await twin.aclose()
    store.close()


def test_without_hiredis_the_store_and_its_twin_stay_on_redis_py(redis_url: str) -> None:
    # In a process of its own: redis-py picks its parser when it is imported.
    script = f"""
import asyncio, sys, time
sys.modules["hiredis"] = None
import redis.asyncio
from twilio_feedback import Record
from twilio_feedback.stores.redis import RedisStore

async def main():
    store = RedisStore({redis_url!r})
    twin = store.as_async()
    assert isinstance(twin.client, redis.asyncio.Redis), twin.client
    assert store._lean is None
    now = time.time()
    await twin.add(Record("a", expires_at=now + 60, message_sid="SM" + "a" * 32))
    assert (await twin.confirm("a", now=now, lease_until=now, keep_until=now))[0]
    store.add(Record("b", expires_at=now + 60, message_sid="SM" + "a" * 32))
    assert store.confirm("b", now=now, lease_until=now, keep_until=now)[0]
    await twin.aclose()
    store.close()

asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_the_lean_connection_runs_on_uvloop(store: RedisStore) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def confirm() -> tuple[bool, Record | None]:
        twin = _lean(store)
        try:
            return await twin.confirm("a", now=now, lease_until=now, keep_until=now)
        finally:
            await twin.aclose()

    now = _add(store, "a")
    won, record = uvloop.run(confirm())
    assert won
    assert record is not None


# -- the sync store's lean connections -----------------------------------------------


def _lean_sync(store: RedisStore) -> None:
    from twilio_feedback.stores._resp import SyncRespClient

    assert isinstance(store._lean, SyncRespClient)


def _client_id(store: RedisStore) -> int:
    assert store._lean is not None
    return int(store._lean.call("CLIENT", "ID"))


def test_sync_threads_share_the_store_each_call_with_its_own_answer(store: RedisStore) -> None:
    _lean_sync(store)
    ids = [f"t{n}" for n in range(320)]
    now = _add(store, *ids[:240])  # the last 80 are unknown
    before = _connections(store)
    barrier = threading.Barrier(8)
    answers: dict[int, list[tuple[str, bool, str | None]]] = {}

    def run(worker: int) -> None:
        barrier.wait()
        mine = answers.setdefault(worker, [])
        for tracking_id in ids[worker::8]:
            won, record = store.confirm(tracking_id, now=now, lease_until=now, keep_until=now)
            mine.append((tracking_id, won, record.tracking_id if record else None))

    threads = [threading.Thread(target=run, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    known = set(ids[:240])
    for worker in range(8):
        assert answers[worker] == [
            (t, t in known, t if t in known else None) for t in ids[worker::8]
        ]
    assert 1 <= _connections(store) - before <= 8  # reused, not one per call
    # A second pass on the same threads' pool opens no connection.
    before = _connections(store)
    assert store.confirm("t0", now=now, lease_until=now, keep_until=now)[0] is False
    assert _connections(store) == before


def test_sync_scripts_flushed_from_redis_are_loaded_again(store: RedisStore) -> None:
    _lean_sync(store)
    now = _add(store, "a", "b")
    assert store.confirm("a", now=now, lease_until=now, keep_until=now)[0]
    store.client.script_flush()
    assert store.confirm("b", now=now, lease_until=now, keep_until=now)[0]
    assert store.mark_reported("b", SID)


def _wait_loaded(server: RedisServer) -> None:
    # A restarted Redis answers LOADING (BusyLoadingError) while it reads its data.
    import redis

    with redis.Redis.from_url(server.url) as admin:
        wait_until(lambda: not int(admin.info("persistence")["loading"]), 30, "data loaded")


@pytest.mark.slow
def test_sync_calls_after_a_redis_restart_reconnect() -> None:
    import redis.exceptions

    server = RedisServer(persistent=True)
    try:
        store = RedisStore(server.url)
        _lean_sync(store)
        ids = [f"t{n}" for n in range(6)]
        now = _add(store, *ids)
        assert store.confirm("t0", now=now, lease_until=now, keep_until=now)[0]
        server.halt()
        with pytest.raises(redis.exceptions.ConnectionError):
            store.confirm("t1", now=now, lease_until=now, keep_until=now)
        server.start()
        _wait_loaded(server)
        assert store.confirm("t1", now=now, lease_until=now, keep_until=now)[0]
        # Restarted while the connection sat idle: the first call works all the same.
        server.halt()
        server.start()
        _wait_loaded(server)
        assert store.confirm("t2", now=now, lease_until=now, keep_until=now)[0]
        assert store.mark_reported("t2", SID)
        store.close()
    finally:
        server.stop()


@pytest.mark.parametrize("where", ["url", "argument"])
def test_a_sync_call_that_times_out_fails_and_later_calls_work(redis_url: str, where: str) -> None:
    import redis
    import redis.exceptions

    store = (
        RedisStore(f"{redis_url}?socket_timeout=0.2")
        if where == "url"
        else RedisStore(redis_url, socket_timeout=0.2)
    )
    _lean_sync(store)
    now = _add(store, "a", "b", "c")
    assert store.confirm("a", now=now, lease_until=now, keep_until=now)[0]
    admin = redis.Redis.from_url(redis_url)
    admin.client_pause(10_000, all=False)  # every client's writes (scripts too) wait
    try:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            store.confirm("b", now=now, lease_until=now, keep_until=now)
        assert time.monotonic() - started < 5  # not the pause's 10 s
    finally:
        admin.client_unpause()
        admin.close()
    # The next call reads its own reply, not the late one of the call that timed out.
    won, record = store.confirm("c", now=now, lease_until=now, keep_until=now)
    assert won
    assert record is not None
    assert record.tracking_id == "c"
    store.close()


@pytest.mark.slow
def test_sync_auth_and_a_database_from_the_url(acl_redis: str) -> None:
    import redis
    import redis.exceptions

    base = acl_redis
    now = time.time()
    for url, db in (
        (f"redis://:s3cret-default@{base}/3", 3),
        (f"redis://app:s3cret-app@{base}/5", 5),
    ):
        store = RedisStore(url)
        _lean_sync(store)
        store.add(Record("x", expires_at=now + 60, message_sid=SID, created_at=now))
        assert store.confirm("x", now=now, lease_until=now, keep_until=now)[0]
        store.close()
        with redis.Redis.from_url(f"redis://:s3cret-default@{base}/{db}") as check:
            assert check.exists("twilio_feedback:r:x") == 1
    wrong = RedisStore(f"redis://app:wrong-pass@{base}/0")
    _lean_sync(wrong)
    with pytest.raises(redis.exceptions.AuthenticationError) as failed:
        wrong.confirm("x", now=now, lease_until=now, keep_until=now)
    assert "wrong-pass" not in str(failed.value)
    wrong.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_share_the_parents_connection(store: RedisStore) -> None:
    _lean_sync(store)
    now = _add(store, "parent", "child")
    parent = _client_id(store)

    def child() -> str:
        won = store.confirm("child", now=now, lease_until=now, keep_until=now)[0]
        return f"{int(won)} {_client_id(store)}"

    won, child_id = in_forked_child(child).split()
    assert won == "1"
    assert int(child_id) != parent
    # The child's exit closed nothing of the parent's: same connection, still working.
    assert store.confirm("parent", now=now, lease_until=now, keep_until=now)[0]
    assert _client_id(store) == parent
