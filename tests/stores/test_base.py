"""The store layer's base: the contract as a base class, the check the tracker runs on any
store, and reprs that keep passwords out."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest

from twilio_feedback import ConfigurationError, Record
from twilio_feedback.stores import (
    REQUIRED_METHODS,
    AdminStore,
    AsyncStores,
    BaseStore,
    Store,
    ThreadedAsyncStore,
    check_store,
    store_from_url,
)
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.stores.redis import AsyncRedisStore, RedisStore
from twilio_feedback.stores.sql import SQLStore

BUILT_IN = [MemoryStore, SQLStore, RedisStore]


def _protocol_methods(protocol: type) -> list[str]:
    return [
        name
        for name, value in vars(protocol).items()
        if inspect.isfunction(value) and not name.startswith("_")
    ]


def test_required_methods_are_the_protocol_s() -> None:
    assert list(REQUIRED_METHODS) == _protocol_methods(Store)


@pytest.mark.parametrize("cls", BUILT_IN)
def test_built_in_stores_inherit_the_contract_and_its_docstrings(cls: type) -> None:
    assert issubclass(cls, BaseStore)
    for name in (*_protocol_methods(Store), *_protocol_methods(AdminStore)):
        own = vars(cls).get(name)
        if own is None or own.__doc__ is None:
            assert inspect.getdoc(getattr(cls, name)) == inspect.getdoc(getattr(BaseStore, name))
        else:  # a backend's own docstring says what it adds, never "see there"
            assert "See :meth:" not in own.__doc__, f"{cls.__name__}.{name}: a stub docstring"


def test_the_base_class_carries_the_contract_s_docstrings() -> None:
    for name in (*_protocol_methods(Store), *_protocol_methods(AdminStore)):
        if name in vars(BaseStore):
            continue  # close(): a default, documented as such
        assert inspect.getdoc(getattr(BaseStore, name)) == inspect.getdoc(getattr(AdminStore, name))
        assert getattr(getattr(BaseStore, name), "__isabstractmethod__", False), name


def test_a_subclass_missing_a_method_cannot_be_built() -> None:
    class Partial(BaseStore):
        def add(self, record: Any) -> None:
            """Insert."""

    with pytest.raises(TypeError, match="abstract"):
        Partial()  # type: ignore[abstract]


def test_the_base_class_offers_the_thread_offload_and_a_no_op_close() -> None:
    store = MemoryStore()
    assert isinstance(SQLStore("sqlite:///f.db").as_async(), ThreadedAsyncStore)
    assert BaseStore.close(store) is None
    assert BaseStore.shared is True
    assert MemoryStore.shared is False


class _NoRenew:
    """A store written for an older release: everything but renew()."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    def __getattr__(self, name: str) -> Any:
        if name == "renew":
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_check_store_accepts_every_built_in_store() -> None:
    for url in ("memory://", "sqlite:///f.db", "redis://127.0.0.1:1/0"):
        store = store_from_url(url, **({"warn": False} if url == "memory://" else {}))
        check_store(store)
        store.close()


def test_check_store_names_the_first_missing_method() -> None:
    with pytest.raises(ConfigurationError, match=r"store _NoRenew has no renew\(\)") as caught:
        check_store(_NoRenew())
    message = str(caught.value)
    assert "add(), get(), attach_sid()" in message  # what a store needs
    assert "stores" in message  # where the docs are


def test_check_store_names_a_method_that_is_not_callable() -> None:
    class Broken(MemoryStore):
        claim = None  # type: ignore[assignment]

    with pytest.raises(ConfigurationError, match=r"store Broken's claim is not callable"):
        check_store(Broken())


def test_check_store_refuses_what_is_not_a_store() -> None:
    with pytest.raises(ConfigurationError, match=r"store str has no add\(\)"):
        check_store("sqlite:///f.db")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:s3cret-pw@db.internal/app?sslpassword=s3cret-ssl",
        "postgresql://app@db.internal/app?password=s3cret-q",
        "redis://:s3cret-pw@cache:6379/0",
        "redis://user:s3cret-pw@cache:6379/0?prefix=app:",
        "rediss://:s3cret-pw@cache:6380/0",
    ],
)
def test_reprs_never_show_a_password(url: str) -> None:
    store = store_from_url(url)
    try:
        text = repr(store)
        assert "s3cret" not in text, text
        assert "***" in text, text
        assert type(store).__name__ in text
    finally:
        store.close()


def test_one_async_twin_per_event_loop() -> None:
    stores = AsyncStores(MemoryStore())

    async def twins() -> tuple[Any, Any]:
        return stores.current(), stores.current()

    first, again = asyncio.run(twins())
    assert first is again  # one per loop
    other, _ = asyncio.run(twins())
    assert other is not first  # another loop, another twin


@pytest.mark.redis
def test_a_redis_twin_serves_each_event_loop(redis_url: str) -> None:
    # A redis.asyncio pool belongs to the loop that made it: a second loop (asyncio.run
    # again, a test's own loop) needs its own, or fails with "Event loop is closed".
    store = RedisStore(redis_url)
    stores = AsyncStores(store)
    now = time.time()

    async def confirm(tracking_id: str) -> bool:
        twin = stores.current()
        assert isinstance(twin, AsyncRedisStore)
        await twin.add(Record(tracking_id, expires_at=now + 60))
        won, _ = await twin.confirm(tracking_id, now=now, lease_until=now, keep_until=now)
        await stores.aclose()
        return won

    assert asyncio.run(confirm("first-loop"))
    assert asyncio.run(confirm("second-loop"))
    store.close()


async def test_aclose_closes_the_running_loop_s_twin_only() -> None:
    closed: list[str] = []

    class Twin(ThreadedAsyncStore):
        async def aclose(self) -> None:
            closed.append("closed")

    class Store_(MemoryStore):
        def as_async(self) -> Twin:
            return Twin(self)

    stores = AsyncStores(Store_())
    twin = stores.current()
    await stores.aclose()
    assert closed == ["closed"]
    assert stores.current() is not twin  # the next use makes a new one
    await stores.aclose()
    await stores.aclose()  # nothing left to close: no error
    assert closed == ["closed", "closed"]
