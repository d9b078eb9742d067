"""The conformance suite on every shipped backend, against real servers."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from twilio_feedback.stores import store_from_url
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing.conformance import StoreConformance

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]


def make_store(backend: str, request: pytest.FixtureRequest) -> Any:
    if backend == "memory":
        return MemoryStore()
    if backend == "sqlite":
        return store_from_url(f"sqlite:///{tempfile.mkdtemp()}/feedback.db")
    if backend == "postgres":
        return store_from_url(request.getfixturevalue("postgres_url"))
    return store_from_url(request.getfixturevalue("redis_url"))


class TestShippedStores(StoreConformance):
    @pytest.fixture(params=BACKENDS)
    def store(self, request: pytest.FixtureRequest) -> Iterator[Any]:
        store = make_store(request.param, request)
        yield store
        store.close()
