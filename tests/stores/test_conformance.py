"""The conformance suite on every shipped backend, against real servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from twilio_feedback.stores import Store, store_from_url
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.stores.redis import RedisStore
from twilio_feedback.stores.sql import SQLStore
from twilio_feedback.testing.conformance import StoreConformance

BACKENDS = [
    "memory",
    "sqlite",
    "sqlite-shared-engine",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("postgres-shared-engine", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-shared-client", marks=pytest.mark.redis),
]


def _url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend.startswith("sqlite"):
        return f"sqlite:///{request.getfixturevalue('tmp_path') / 'feedback.db'}"
    if backend.startswith("postgres"):
        return str(request.getfixturevalue("postgres_url"))  # one fresh database per test
    return str(request.getfixturevalue("redis_url"))


def make_store(backend: str, request: pytest.FixtureRequest, cleanup: list[Any]) -> Store:
    """A fresh, empty store of ``backend``; what the store does not own goes in ``cleanup``."""
    if backend == "memory":
        return MemoryStore()
    url = _url(backend, request)
    if backend.endswith("shared-engine"):
        import sqlalchemy

        from twilio_feedback.stores.sql import normalize_url

        engine = sqlalchemy.create_engine(normalize_url(url))
        cleanup.append(engine.dispose)
        return SQLStore(engine, table="app_feedback")
    if backend == "redis-shared-client":
        import redis

        # Without async_client= the async twin runs this client in a worker thread;
        # tests/stores/test_redis.py covers a shared async client.
        client = redis.Redis.from_url(url)
        cleanup.append(client.close)
        return RedisStore(client, prefix="app:tf:")
    return store_from_url(url)


def shared_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """The URL another process opens ``make_store(backend)``'s store with (``None``: the
    store lives in this process)."""
    if backend == "memory":
        return None
    url = _url(backend, request)
    if backend.endswith("shared-engine"):
        return f"{url}?table=app_feedback"
    if backend == "redis-shared-client":
        return f"{url}?prefix=app:tf:"
    return url


class TestShippedStores(StoreConformance):
    @pytest.fixture(params=BACKENDS)
    def store(self, request: pytest.FixtureRequest) -> Iterator[Store]:
        cleanup: list[Any] = []
        store = make_store(request.param, request, cleanup)
        yield store
        store.close()
        for close in cleanup:
            close()

    @pytest.fixture
    def store_factory(self, store: Store, request: pytest.FixtureRequest) -> str | None:
        return shared_url(request.node.callspec.params["store"], request)
