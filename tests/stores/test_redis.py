"""What the Redis store adds to the contract: TTLs, the outbox index, URLs, shared clients."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest

from twilio_feedback import ConfigurationError, MissingDependencyError, Record, State
from twilio_feedback.stores import ThreadedAsyncStore, store_from_url
from twilio_feedback.stores.redis import AsyncRedisStore, RedisStore

from ..servers import RedisServer, wait_until

pytestmark = pytest.mark.redis

SID = "SM" + "a" * 32


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url)
    yield store
    store.close()


def _confirmed(store: RedisStore, tracking_id: str, *, lease: float = -1.0) -> Record:
    now = time.time()
    store.add(Record(tracking_id, expires_at=now + 600, message_sid=SID, created_at=now))
    won, record = store.confirm(tracking_id, now=now, lease_until=now + lease, keep_until=now + 900)
    assert won
    assert record is not None
    return record


def _commands(store: RedisStore) -> dict[str, int]:
    return {name: stats["calls"] for name, stats in store.client.info("commandstats").items()}


def test_records_expire_by_themselves_at_expires_at(store: RedisStore) -> None:
    now = time.time()
    store.add(Record("x", expires_at=now + 100, message_sid=SID))
    assert store.client.pexpiretime(store.key("x")) == int((now + 100) * 1000)
    store.confirm("x", now=now, lease_until=now + 60, keep_until=now + 500)
    assert store.client.pexpiretime(store.key("x")) == int((now + 500) * 1000)


def test_the_outbox_is_a_sorted_set_by_lease_end(store: RedisStore) -> None:
    record = _confirmed(store, "x", lease=30)
    assert store.client.zscore(store.outbox, "x") == pytest.approx(record.lease_until)
    store.defer("x", SID, lease_until=record.lease_until + 100, attempts=1, code=None, message=None)
    assert store.client.zscore(store.outbox, "x") == pytest.approx(record.lease_until + 100)
    assert store.renew([("x", SID)], lease_until=record.lease_until + 200) == 1
    assert store.client.zscore(store.outbox, "x") == pytest.approx(record.lease_until + 200)
    store.mark_reported("x", SID)
    assert store.client.zscore(store.outbox, "x") is None


def test_claim_never_scans(store: RedisStore) -> None:
    for n in range(20):
        _confirmed(store, f"t{n}")
    before = _commands(store)
    now = time.time()
    assert len(store.claim(now=now, lease_until=now + 60, limit=100)) == 20
    after = _commands(store)
    assert after.get("cmdstat_scan", 0) == before.get("cmdstat_scan", 0)
    assert after.get("cmdstat_keys", 0) == before.get("cmdstat_keys", 0)


def test_purge_drops_outbox_entries_of_expired_records(store: RedisStore) -> None:
    now = time.time()
    for n in range(3):
        store.add(Record(f"gone{n}", expires_at=now + 0.3, state=State.CONFIRMED, message_sid=SID))
    _confirmed(store, "live")
    assert store.client.zcard(store.outbox) == 4
    wait_until(lambda: store.get("gone0") is None, 5, "Redis expiring the records")
    wait_until(lambda: store.client.exists(store.key("gone2")) == 0, 5, "the other records")
    assert store.purge(now=time.time()) == 3
    assert [m.decode() for m in store.client.zrange(store.outbox, 0, -1)] == ["live"]


def test_prefixes_keep_apps_apart(redis_url: str) -> None:
    one = RedisStore(redis_url, prefix="one:")
    two = store_from_url(redis_url + "?prefix=two:")
    assert isinstance(two, RedisStore)
    assert two.prefix == "two:"
    _confirmed(one, "x")
    assert two.get("x") is None
    assert two.counts()["confirmed"] == 0
    now = time.time()
    assert two.claim(now=now, lease_until=now + 60, limit=10) == []
    assert all(key.startswith(b"one:") for key in one.client.keys("*"))
    one.close()
    two.close()


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        ("app*:", "app1:"),
        ("app?:", "app1:"),
        ("app[12]:", "app1:"),
        ("app\\", "app\\x"),
        ("app:", "app:r:"),  # their keys start with ours, "app:r:"
        ("app:", "app:r:x"),
    ],
)
def test_scans_never_read_another_prefix(redis_url: str, mine: str, theirs: str) -> None:
    other = RedisStore(redis_url, prefix=theirs)
    now = time.time()
    for name in ("f1", "f2"):
        _confirmed(other, name)
        assert other.mark_failed(name, SID, code=20003, message="Authenticate")
    _confirmed(other, "c")
    own = RedisStore(redis_url, prefix=mine)
    _confirmed(own, "mine")
    assert own.mark_failed("mine", SID, code=20003, message="Authenticate")
    assert own.counts() == {"pending": 0, "confirmed": 0, "reported": 0, "failed": 1}
    assert [r.tracking_id for r in own.list_records(State.FAILED, limit=10)] == ["mine"]
    assert own.requeue_failed(now=now, keep_until=now + 60) == 1
    assert other.counts() == {"pending": 0, "confirmed": 1, "reported": 0, "failed": 2}
    assert other.requeue_failed(now=now, keep_until=now + 60) == 2
    assert own.counts()["confirmed"] == 1
    own.close()
    other.close()


@pytest.mark.parametrize("prefix", ["", "app\udc80:"])
def test_prefixes_that_cannot_be_made_safe_are_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        RedisStore("redis://127.0.0.1:1/0", prefix=prefix)
    with pytest.raises(ConfigurationError, match="prefix"):
        store_from_url("redis://127.0.0.1:1/0?prefix=")


def test_unix_socket_urls(redis_server: RedisServer) -> None:
    redis_server.flush()
    store = store_from_url(f"unix://{redis_server.socket_path}?db=0&prefix=sock:")
    assert isinstance(store, RedisStore)
    store.add(Record("x", expires_at=time.time() + 60))
    assert store.confirm("x", now=time.time(), lease_until=0, keep_until=0)[0]
    store.close()


def test_rediss_urls_use_tls() -> None:
    store = store_from_url("rediss://cache.example:6380/0")
    assert isinstance(store, RedisStore)
    assert store.client.connection_pool.connection_class.__name__ == "SSLConnection"
    store.close()


def test_a_shared_client_is_left_open(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client)
    _confirmed(store, "x")
    store.close()
    assert client.ping()
    assert isinstance(store.as_async(), ThreadedAsyncStore)  # no async client given
    client.close()


def test_missing_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingDependencyError, match=r"twilio-feedback\[redis\]"):
        store_from_url("redis://127.0.0.1:6379/0")


async def test_the_async_twin_is_native(store: RedisStore) -> None:
    twin = store.as_async()
    assert isinstance(twin, AsyncRedisStore)
    now = time.time()
    await twin.add(Record("x", expires_at=now + 60, message_sid=SID))
    won, record = await twin.confirm("x", now=now, lease_until=now - 1, keep_until=now + 60)
    assert won
    assert record is not None
    assert [r.tracking_id for r in store.claim(now=now, lease_until=now, limit=5)] == ["x"]
    await twin.aclose()


async def test_a_shared_async_client(redis_url: str) -> None:
    import redis
    import redis.asyncio

    client = redis.Redis.from_url(redis_url)
    async_client = redis.asyncio.Redis.from_url(redis_url)
    store = RedisStore(client, async_client=async_client, prefix="shared:")
    twin = store.as_async()
    assert isinstance(twin, AsyncRedisStore)
    assert twin.client is async_client
    await twin.add(Record("x", expires_at=time.time() + 60))
    await twin.aclose()
    assert await async_client.exists("shared:r:x") == 1  # still open: it is the app's
    store.close()
    await async_client.aclose()
    client.close()


@pytest.mark.slow
def test_a_redis_restart_costs_no_request() -> None:
    server = RedisServer(persistent=True)
    try:
        store = RedisStore(server.url)
        now = time.time()
        for name in ("a", "b"):
            store.add(Record(name, expires_at=now + 600, message_sid=SID))
        assert store.confirm("a", now=now, lease_until=now, keep_until=now)[0]
        server.halt()
        server.start()
        won, record = store.confirm("b", now=now, lease_until=now, keep_until=now)
        assert won
        assert record is not None
        got = store.get("a")
        assert got is not None
        assert got.state is State.CONFIRMED  # the append-only file kept it
        store.close()
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("client", ["own", "shared"])
async def test_a_redis_restart_costs_no_request_on_the_async_twin(client: str) -> None:
    import asyncio

    import redis
    import redis.asyncio

    server = RedisServer(persistent=True)
    try:
        if client == "own":
            store = RedisStore(server.url)
        else:  # the app's clients: the store cannot configure their pools
            store = RedisStore(
                redis.Redis.from_url(server.url),
                async_client=redis.asyncio.Redis.from_url(server.url),
            )
        twin = store.as_async()
        now = time.time()
        for n in range(40):
            store.add(Record(f"t{n}", expires_at=now + 600, message_sid=SID))

        async def confirm(n: int) -> bool:
            won, _ = await twin.confirm(f"t{n}", now=now, lease_until=now, keep_until=now)
            return won

        # Concurrent confirms, as under load: the pool holds several connections.
        assert all(await asyncio.gather(*(confirm(n) for n in range(20))))
        server.halt()
        server.start()
        results = await asyncio.gather(*(confirm(n) for n in range(20, 40)), return_exceptions=True)
        assert results == [True] * 20
        await twin.aclose()
        store.close()
        if client == "shared":
            await store.async_client.aclose()  # type: ignore[union-attr]
            store.client.close()
    finally:
        server.stop()
