"""examples/custom_store.py passes the conformance suite and registers its scheme."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from twilio_feedback.stores import AdminStore, Store, base, store_from_url
from twilio_feedback.testing.conformance import StoreConformance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_store.py"


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example module, freshly imported; its registration undone afterwards."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    spec = importlib.util.spec_from_file_location("custom_store_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestDictStore(StoreConformance):
    @pytest.fixture
    def store(self, example: ModuleType) -> Iterator[Any]:
        store = store_from_url("dict://")
        yield store
        store.close()


def test_the_example_is_a_store_with_operator_commands(example: ModuleType) -> None:
    store = store_from_url("dict://")
    assert isinstance(store, example.DictStore)
    assert isinstance(store, Store)
    assert isinstance(store, AdminStore)
    assert example.DictStore.shared is False  # a threading.Lock is atomic in one process only


def test_the_example_runs() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "{'pending': 0, 'confirmed': 1, 'reported': 0, 'failed': 0}"
    )
