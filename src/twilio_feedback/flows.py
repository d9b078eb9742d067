"""One implementation for every sync/async pair: flows, and the two drivers that run them.

A flow is a generator that does the work of one operation (``send``, ``bind``, a
confirmation) and *yields* each piece of I/O it needs as a step: :class:`StoreCall` (an
operation of the store) or :class:`Blocking` (a call that blocks, such as one to Twilio).
The result comes back at the ``yield``; a failure is raised there. :func:`run` performs the
steps in the calling thread; :func:`arun` awaits the store's async twin and runs blocking
calls in a worker thread, so the event loop never waits on I/O. ``send`` and
``send_async`` are then the same code under two drivers: they cannot drift apart (the
parity httpcore gets by generating its sync code from its async code, by construction).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, TypeVar

if TYPE_CHECKING:
    from .stores.base import AsyncStore, Store

__all__ = ["Blocking", "Flow", "Step", "StoreCall", "Stores", "arun", "run"]

T = TypeVar("T")


class StoreCall(NamedTuple):
    """Call the store's ``name`` operation (its async twin's, under :func:`arun`)."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = {}


class Blocking(NamedTuple):
    """Call ``fn()``; under :func:`arun`, in a worker thread."""

    fn: Callable[[], Any]


Step: TypeAlias = "StoreCall | Blocking"
Flow: TypeAlias = "Generator[Step, Any, T]"
"""A flow: yields steps, receives their results, returns its own."""


class Stores:
    """A store and its async views: one per event loop, made on first use (a native twin
    holds connections bound to the loop that made them; see
    :class:`~twilio_feedback.stores.base.AsyncStores`)."""

    def __init__(self, store: Store) -> None:
        from .stores.base import AsyncStores

        self.sync = store
        self._twins = AsyncStores(store)

    @property
    def async_(self) -> AsyncStore:
        """The running event loop's async view (the store's own ``as_async()``, or a
        thread offload)."""
        return self._twins.current()

    async def aclose(self) -> None:
        """Close the running event loop's async view, if one was made."""
        await self._twins.aclose()


class _Finished(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


def _resume(flow: Flow[Any], value: Any, error: BaseException | None) -> Step:
    """The flow's next step, given the last one's result or failure; raises
    :class:`_Finished` with the flow's own result when it returns."""
    try:
        return flow.send(value) if error is None else flow.throw(error)
    except StopIteration as stop:
        raise _Finished(stop.value) from None


def run(flow: Flow[T], stores: Stores) -> T:
    """Run ``flow`` in this thread."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            step = _resume(flow, value, error)
            value, error = None, None
            try:
                if isinstance(step, StoreCall):
                    value = getattr(stores.sync, step.name)(*step.args, **step.kwargs)
                else:
                    value = step.fn()
            except BaseException as exc:  # handed to the flow, which decides
                error = exc
    except _Finished as finished:
        result: T = finished.value
        return result


async def arun(flow: Flow[T], stores: Stores) -> T:
    """Run ``flow`` on the event loop: store I/O through the async view, blocking calls
    in a worker thread."""
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            step = _resume(flow, value, error)
            value, error = None, None
            try:
                if isinstance(step, StoreCall):
                    value = await getattr(stores.async_, step.name)(*step.args, **step.kwargs)
                else:
                    value = await asyncio.to_thread(step.fn)
            except BaseException as exc:  # handed to the flow, which decides
                error = exc
    except _Finished as finished:
        result: T = finished.value
        return result
