"""The one boundary every store call crosses: failures become :class:`StorageError`.

The tracker wraps its store (a built-in one or yours) in a :class:`StoreBoundary`. Whatever
a backend raises (a driver's ``ConnectionError``, a timeout, an ``AttributeError`` in a
custom store) comes out as a :class:`~twilio_feedback.errors.StorageError` that names the
backend and the operation, with the original as its ``__cause__``. It is logged here, once:
one WARNING line per operation at most every :data:`LOG_EVERY` seconds, saying how many
calls failed and with which exception type (so a bug in a custom store is told apart from
an outage), and the traceback of each at DEBUG. Callers decide what a failure means (a
confirmation kept in memory, a retry) without logging it again.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from datetime import date
from typing import Any

from ..errors import StorageError
from ..insights import Cell
from ..lifecycle import ProcessLocal, Throttle
from ..records import Record
from ..settings import redact_text
from .base import AsyncStore, Store, as_async_store

__all__ = ["LOG_EVERY", "AsyncStoreBoundary", "StoreBoundary"]

logger = logging.getLogger("twilio_feedback.store")

LOG_EVERY = 10.0
"""Seconds between two WARNING lines about one failing store operation."""
_DETAIL = 200  # characters of the original exception's message kept in a StorageError


class _Failures(ProcessLocal):
    """Turns exceptions into StorageErrors and logs them, throttled per operation."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        super().__init__()

    def _init_state(self) -> None:
        super()._init_state()
        self._throttles: dict[str, Throttle] = {}

    def error(self, operation: str, exc: BaseException) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        lines = str(exc).strip().splitlines()
        detail = redact_text(lines[0][:_DETAIL]) if lines else ""
        kind = type(exc).__name__
        error = StorageError(
            f"store {self.backend}.{operation}() failed: {kind}"
            + (f": {detail}" if detail else ""),
            backend=self.backend,
            operation=operation,
        )
        if logger.isEnabledFor(logging.DEBUG):
            # Formatted here, so that a URL with a password in a driver's message is masked.
            trace = redact_text("".join(traceback.format_exception(exc)))
            logger.debug(
                "store %s.%s() failed:\n%s",
                self.backend,
                operation,
                trace,
                extra={
                    "event": "store_failed",
                    "backend": self.backend,
                    "operation": operation,
                    "error_type": kind,
                },
            )
        throttle = self._throttles.get(operation)
        if throttle is None:
            throttle = self._throttles.setdefault(operation, Throttle(LOG_EVERY))
        count = throttle.hit()
        if count:
            logger.warning(
                "%s (%d failure(s) of %s() in the last %.0fs at most; tracebacks at DEBUG)",
                error,
                count,
                operation,
                LOG_EVERY,
                extra={
                    "event": "store_failed",
                    "backend": self.backend,
                    "operation": operation,
                    "error_type": kind,
                    "count": count,
                },
            )
        return error


class StoreBoundary:
    """A :class:`~twilio_feedback.stores.Store` that forwards to ``store`` and turns its
    failures into :class:`~twilio_feedback.errors.StorageError`. Attributes it does not
    define (a backend's own, the operator's ``list_records``) are the wrapped store's."""

    def __init__(self, store: Store, *, backend: str | None = None) -> None:
        self.inner = store
        """The wrapped store."""
        self.backend = backend or type(store).__name__
        self._failures = _Failures(self.backend)

    def __repr__(self) -> str:
        return f"StoreBoundary({self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _error(self, operation: str, exc: BaseException) -> StorageError:
        return self._failures.error(operation, exc)

    def add(self, record: Record) -> None:
        """:meth:`Store.add`, across the boundary."""
        try:
            self.inner.add(record)
        except Exception as exc:
            raise self._error("add", exc) from exc

    def get(self, tracking_id: str) -> Record | None:
        """:meth:`Store.get`, across the boundary."""
        try:
            return self.inner.get(tracking_id)
        except Exception as exc:
            raise self._error("get", exc) from exc

    def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        """:meth:`Store.attach_sid`, across the boundary."""
        try:
            return self.inner.attach_sid(tracking_id, message_sid, account_sid)
        except Exception as exc:
            raise self._error("attach_sid", exc) from exc

    def delete(self, tracking_id: str) -> None:
        """:meth:`Store.delete`, across the boundary."""
        try:
            self.inner.delete(tracking_id)
        except Exception as exc:
            raise self._error("delete", exc) from exc

    def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """:meth:`Store.confirm`, across the boundary."""
        try:
            return self.inner.confirm(
                tracking_id, now=now, lease_until=lease_until, keep_until=keep_until
            )
        except Exception as exc:
            raise self._error("confirm", exc) from exc

    def claim(self, *, now: float, lease_until: float, limit: int) -> list[Record]:
        """:meth:`Store.claim`, across the boundary."""
        try:
            return self.inner.claim(now=now, lease_until=lease_until, limit=limit)
        except Exception as exc:
            raise self._error("claim", exc) from exc

    def renew(self, held: Sequence[tuple[str, str]], *, lease_until: float) -> int:
        """:meth:`Store.renew`, across the boundary."""
        try:
            return self.inner.renew(held, lease_until=lease_until)
        except Exception as exc:
            raise self._error("renew", exc) from exc

    def mark_reported(self, tracking_id: str, message_sid: str) -> bool:
        """:meth:`Store.mark_reported`, across the boundary."""
        try:
            return self.inner.mark_reported(tracking_id, message_sid)
        except Exception as exc:
            raise self._error("mark_reported", exc) from exc

    def mark_failed(
        self, tracking_id: str, message_sid: str, *, code: int | None, message: str | None
    ) -> bool:
        """:meth:`Store.mark_failed`, across the boundary."""
        try:
            return self.inner.mark_failed(tracking_id, message_sid, code=code, message=message)
        except Exception as exc:
            raise self._error("mark_failed", exc) from exc

    def defer(
        self,
        tracking_id: str,
        message_sid: str,
        *,
        lease_until: float,
        attempts: int,
        code: int | None,
        message: str | None,
    ) -> bool:
        """:meth:`Store.defer`, across the boundary."""
        try:
            return self.inner.defer(
                tracking_id,
                message_sid,
                lease_until=lease_until,
                attempts=attempts,
                code=code,
                message=message,
            )
        except Exception as exc:
            raise self._error("defer", exc) from exc

    def purge(self, *, now: float) -> int:
        """:meth:`Store.purge`, across the boundary."""
        try:
            return self.inner.purge(now=now)
        except Exception as exc:
            raise self._error("purge", exc) from exc

    def counts(self) -> dict[str, int]:
        """:meth:`Store.counts`, across the boundary."""
        try:
            return self.inner.counts()
        except Exception as exc:
            raise self._error("counts", exc) from exc

    def oldest_unreported(self) -> float | None:
        """:meth:`HealthStore.oldest_unreported`, across the boundary. ``AttributeError``
        (not a StorageError) when the wrapped store does not have it."""
        query = self.inner.oldest_unreported  # type: ignore[attr-defined]
        try:
            found: float | None = query()
        except Exception as exc:
            raise self._error("oldest_unreported", exc) from exc
        return found

    def insight_cells(self, since: date, until: date) -> list[Cell]:
        """:meth:`InsightsStore.insight_cells`, across the boundary. ``AttributeError``
        (not a StorageError) when the wrapped store does not have it."""
        query = self.inner.insight_cells  # type: ignore[attr-defined]
        try:
            found: list[Cell] = query(since, until)
        except Exception as exc:
            raise self._error("insight_cells", exc) from exc
        return found

    def close(self) -> None:
        """:meth:`Store.close`, across the boundary."""
        try:
            self.inner.close()
        except Exception as exc:
            raise self._error("close", exc) from exc

    def as_async(self) -> AsyncStore:
        """The wrapped store's async view, behind the same boundary."""
        return AsyncStoreBoundary(as_async_store(self.inner), self._error)


class AsyncStoreBoundary:
    """The async twin of :class:`StoreBoundary`, around a store's async view."""

    def __init__(self, store: AsyncStore, error: Any) -> None:
        self.inner = store
        self._error = error

    async def add(self, record: Record) -> None:
        """:meth:`Store.add`, across the boundary."""
        try:
            await self.inner.add(record)
        except Exception as exc:
            raise self._error("add", exc) from exc

    async def attach_sid(
        self, tracking_id: str, message_sid: str, account_sid: str | None
    ) -> Record | None:
        """:meth:`Store.attach_sid`, across the boundary."""
        try:
            return await self.inner.attach_sid(tracking_id, message_sid, account_sid)
        except Exception as exc:
            raise self._error("attach_sid", exc) from exc

    async def delete(self, tracking_id: str) -> None:
        """:meth:`Store.delete`, across the boundary."""
        try:
            await self.inner.delete(tracking_id)
        except Exception as exc:
            raise self._error("delete", exc) from exc

    async def confirm(
        self, tracking_id: str, *, now: float, lease_until: float, keep_until: float
    ) -> tuple[bool, Record | None]:
        """:meth:`Store.confirm`, across the boundary."""
        try:
            return await self.inner.confirm(
                tracking_id, now=now, lease_until=lease_until, keep_until=keep_until
            )
        except Exception as exc:
            raise self._error("confirm", exc) from exc

    async def aclose(self) -> None:
        """Close the wrapped async view."""
        try:
            await self.inner.aclose()
        except Exception as exc:
            raise self._error("aclose", exc) from exc
