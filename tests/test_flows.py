"""The two drivers run one flow the same way: results, failures and where I/O happens."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from twilio_feedback.flows import Blocking, Flow, StoreCall, Stores, arun, run
from twilio_feedback.records import Record
from twilio_feedback.stores.memory import MemoryStore


def flow(log: list[Any]) -> Flow[str]:
    record = Record("t1", expires_at=4e9)
    yield StoreCall("add", (record,))
    got = yield StoreCall("get", ("t1",))
    log.append(("got", got.tracking_id))
    thread = yield Blocking(lambda: threading.current_thread().name)
    log.append(("blocking ran in", thread))
    try:
        yield Blocking(lambda: 1 / 0)
    except ZeroDivisionError:
        log.append("caught")
    return "done"


class GetAsync(MemoryStore):
    """The memory store's async view has no get(); this one offers it, for the test."""

    def as_async(self) -> Any:
        view = super().as_async()
        store = self

        class View:
            async def add(self, record: Record) -> None:
                await view.add(record)

            async def get(self, tracking_id: str) -> Record | None:
                return store.get(tracking_id)

        return View()


def test_sync_and_async_drivers_run_one_flow_alike() -> None:
    sync_log: list[Any] = []
    assert run(flow(sync_log), Stores(GetAsync())) == "done"
    async_log: list[Any] = []
    assert asyncio.run(arun(flow(async_log), Stores(GetAsync()))) == "done"
    assert sync_log[0] == async_log[0] == ("got", "t1")
    assert sync_log[2] == async_log[2] == "caught"
    # Blocking calls: the caller's thread under run(), a worker thread under arun().
    assert sync_log[1] == ("blocking ran in", threading.current_thread().name)
    assert async_log[1][1] != threading.current_thread().name


def test_a_failure_the_flow_does_not_catch_reaches_the_caller() -> None:
    def failing() -> Flow[None]:
        yield StoreCall("no_such_operation")

    with pytest.raises(AttributeError):
        run(failing(), Stores(MemoryStore()))
    with pytest.raises(AttributeError):
        asyncio.run(arun(failing(), Stores(MemoryStore())))


def test_cancellation_is_handed_to_the_flow() -> None:
    seen: list[str] = []
    started, release = threading.Event(), threading.Event()

    def wait() -> None:
        started.set()
        release.wait(10)

    def slow() -> Flow[None]:
        try:
            yield Blocking(wait)
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    async def main() -> None:
        task = asyncio.create_task(arun(slow(), Stores(MemoryStore())))
        for _ in range(500):  # until the blocking call runs (a condition, with a deadline)
            if started.is_set():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()

    asyncio.run(main())
    assert seen == ["CancelledError"]
