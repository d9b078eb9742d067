"""The conformance suite catches a store that is atomic only between the threads of one
process, yet shared by several: records in one JSON file, every method under a
``threading.Lock``. The thread races pass on it; the process races must not."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from twilio_feedback import Record, State
from twilio_feedback.testing.conformance import StoreConformance


class ThreadLockedFileStore:
    """Enough of a store for the races: records in a JSON file that every process opens,
    each operation a read, a round trip's wait, and a write, all under a lock that only
    this process's threads see."""

    shared = True  # what it claims

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Record]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {key: Record.from_dict(value) for key, value in data.items()}

    def _save(self, records: dict[str, Record]) -> None:
        time.sleep(0.001)  # the backend's round trip, between the read and the write
        temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({k: r.to_dict() for k, r in records.items()}))
        os.replace(temporary, self.path)

    def add(self, record: Record) -> None:
        with self._lock:
            records = self._load()
            records[record.tracking_id] = record
            self._save(records)

    def get(self, tracking_id: str) -> Record | None:
        with self._lock:
            return self._load().get(tracking_id)

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        with self._lock:
            records = self._load()
            record = records.get(tracking_id)
            if record is None or record.state is not State.PENDING or record.expires_at <= now:
                return False, record
            record = record.replace(
                state=State.CONFIRMED,
                confirmed_at=now,
                lease_until=lease_until,
                expires_at=max(record.expires_at, keep_until),
            )
            records[tracking_id] = record
            self._save(records)
            return True, record

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        with self._lock:
            records = self._load()
            due = [
                r
                for r in records.values()
                if r.state is State.CONFIRMED and r.message_sid and r.lease_until <= now
            ][:limit]
            taken = [r.replace(lease_until=lease_until) for r in due]
            records.update((r.tracking_id, r) for r in taken)
            self._save(records)
            return taken

    def counts(self) -> dict[str, int]:
        result = {state.value: 0 for state in State}
        for record in self._load().values():
            result[record.state.value] += 1
        return result

    def close(self) -> None:
        """Nothing to release."""


@pytest.fixture
def locked(tmp_path: Path) -> tuple[ThreadLockedFileStore, Any]:
    path = str(tmp_path / "records.json")
    return ThreadLockedFileStore(path), functools.partial(ThreadLockedFileStore, path)


def test_a_thread_lock_passes_the_thread_races(locked: tuple[Any, Any]) -> None:
    store, _ = locked
    StoreConformance().test_confirm_under_contention_has_one_winner(store)


def test_a_thread_lock_fails_the_process_race_of_confirm(locked: tuple[Any, Any]) -> None:
    store, factory = locked
    with pytest.raises(AssertionError, match="exactly one process win each record"):
        StoreConformance().test_processes_race_confirm(store, factory)


def test_a_thread_lock_fails_the_process_race_of_claim(locked: tuple[Any, Any]) -> None:
    store, factory = locked
    with pytest.raises(AssertionError, match="never hand one record to two processes"):
        StoreConformance().test_processes_race_claim(store, factory)


def test_a_shared_store_without_a_factory_is_not_let_through(tmp_path: Path) -> None:
    (tmp_path / "test_claimed.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from twilio_feedback.stores.memory import MemoryStore
            from twilio_feedback.testing.conformance import StoreConformance

            class Claimed(MemoryStore):
                shared = True  # says processes share it, gives no way to open it elsewhere

            class TestClaimed(StoreConformance):
                @pytest.fixture
                def store(self):
                    return Claimed()

            class TestLocal(StoreConformance):
                @pytest.fixture
                def store(self):
                    return MemoryStore()
            """
        )
    )
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "processes", "-rEs"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    summary = done.stdout.splitlines()[-1]
    assert re.search(r"2 skipped.* 2 errors", summary), done.stdout[-3000:]
    assert "Claimed: give StoreConformance a store_factory fixture" in done.stdout
    for race in ("confirm", "claim"):  # the shared one errs; the process-local one skips
        assert f"ERROR test_claimed.py::TestClaimed::test_processes_race_{race}" in done.stdout
