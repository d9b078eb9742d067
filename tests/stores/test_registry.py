"""Picking a store by URL scheme, and registering new ones."""

from __future__ import annotations

from typing import Any

import pytest

from twilio_feedback import ConfigurationError
from twilio_feedback.stores import base, register_store, registered_schemes, store_from_url
from twilio_feedback.stores.memory import MemoryStore, MemoryStoreWarning
from twilio_feedback.stores.redis import RedisStore
from twilio_feedback.stores.sql import SQLStore


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))


def test_shipped_schemes() -> None:
    assert {"memory", "sqlite", "postgresql", "postgres", "redis", "rediss", "unix"} <= set(
        registered_schemes()
    )
    assert isinstance(store_from_url("memory://?maxsize=10", warn=False), MemoryStore)
    for url in ("sqlite:///f.db", "postgresql+psycopg://u@h/db", "postgres://u@h/db"):
        store = store_from_url(url)
        assert isinstance(store, SQLStore)
        store.close()
    for url in ("redis://h:6379/0", "rediss://h/0", "unix:///tmp/r.sock"):
        store = store_from_url(url)
        assert isinstance(store, RedisStore)
        store.close()


def test_the_memory_store_warns_it_is_not_durable(monkeypatch: pytest.MonkeyPatch) -> None:
    from twilio_feedback.stores import memory

    monkeypatch.setattr(memory, "_warned", False)
    with pytest.warns(MemoryStoreWarning, match="not shared between processes"):
        store_from_url("memory://")


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown store scheme mongodb://.*redis://"):
        store_from_url("mongodb://db")


def test_register_a_callable_or_a_dotted_path() -> None:
    made: list[tuple[str, dict[str, Any]]] = []

    def factory(url: str, **options: Any) -> MemoryStore:
        made.append((url, options))
        return MemoryStore()

    register_store("mine", factory)
    assert isinstance(store_from_url("mine://x", flavour=1), MemoryStore)
    assert made == [("mine://x", {"flavour": 1})]
    register_store("lazy", "twilio_feedback.stores.memory:MemoryStore.from_url")
    assert isinstance(store_from_url("lazy://", warn=False), MemoryStore)
    assert {"mine", "lazy"} <= set(registered_schemes())


def test_scheme_names_are_checked() -> None:
    for bad in ("", "no spaces", "a/b"):
        with pytest.raises(ValueError, match="invalid store scheme"):
            register_store(bad, MemoryStore)
