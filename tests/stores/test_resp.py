"""The Redis store's lean async path (stores/_resp.py): one pipelined hiredis connection."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from twilio_feedback import Record
from twilio_feedback.stores.redis import AsyncRedisStore, RedisStore

from ..servers import RedisServer

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


@pytest.mark.slow
async def test_auth_and_a_database_from_the_url() -> None:
    import redis
    import redis.exceptions

    server = RedisServer()
    try:
        with redis.Redis.from_url(server.url) as admin:
            admin.acl_setuser(
                "app", enabled=True, passwords=["+s3cret-app"], keys="*", commands=["+@all"]
            )
            admin.config_set("requirepass", "s3cret-default")
        base = f"127.0.0.1:{server.port}"
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
    finally:
        server.stop()


@pytest.mark.parametrize(
    "url",
    [
        "rediss://cache.example:6380/0",
        "unix:///tmp/redis.sock?db=0",
        "redis://127.0.0.1:6379/0?health_check_interval=5",
        "redis://127.0.0.1:6379/0?protocol=3",
    ],
)
async def test_other_urls_stay_on_redis_py(url: str) -> None:
    import redis.asyncio

    store = RedisStore(url)
    twin = store.as_async()
    assert isinstance(twin, AsyncRedisStore)
    assert isinstance(twin.client, redis.asyncio.Redis)
    await twin.aclose()
    store.close()


def test_without_hiredis_the_twin_stays_on_redis_py(redis_url: str) -> None:
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
    now = time.time()
    await twin.add(Record("a", expires_at=now + 60, message_sid="SM" + "a" * 32))
    assert (await twin.confirm("a", now=now, lease_until=now, keep_until=now))[0]
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
