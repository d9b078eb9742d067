"""Is delivery keeping up? One answer for ``tracker.health()`` and ``twilio-feedback status``.

The figure that tells is the age of the oldest unreported confirmation: a confirmed record
with a message SID that Twilio has not accepted yet. While reports go out it stays at a few
seconds, whoever delivers them; it grows when nothing delivers (no worker running, Twilio
down, credentials refused), whatever the traffic. The store's counts come with it, the
``failed`` count among them (Twilio refused those for good: a monitor may alert on its
growth, but it does not make delivery unhealthy).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from .errors import StorageError
from .records import State
from .stores.base import HealthStore
from .stores.boundary import StoreBoundary

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["MAX_AGE", "Health", "HealthState", "check", "supports_health"]

MAX_AGE = 300.0
"""Seconds an unreported confirmation may wait before delivery counts as behind. At
default settings a report goes out within seconds, a dead process's within 25 s, and a
retry waits a minute at most; five minutes of waiting means nothing is delivering."""

HealthState = Literal["ok", "behind", "unknown", "unavailable"]


@dataclass(frozen=True, slots=True)
class Health:
    """Delivery's health, as a monitor reads it.

    ``state`` is ``ok`` (nothing has waited longer than ``max_age``), ``behind`` (the
    oldest unreported confirmation is older than that), ``unknown`` (the store cannot tell
    its age: it is not a :class:`~twilio_feedback.stores.HealthStore`) or ``unavailable``
    (the store could not be reached). ``oldest_unreported_age`` is that age in seconds
    (``None``: nothing waits). ``unreported`` and ``failed`` count the store's ``confirmed``
    and ``failed`` records, every process's. ``pending`` is what this process's reporter
    holds (queued, in flight, waiting for a retry); ``None`` where no reporter runs here.
    """

    state: HealthState
    oldest_unreported_age: float | None
    unreported: int | None
    failed: int | None
    pending: int | None
    max_age: float

    @property
    def ok(self) -> bool:
        """Whether ``state`` is ``ok``."""
        return self.state == "ok"

    def to_dict(self) -> dict[str, Any]:
        """The fields and ``ok``, for JSON."""
        return {"ok": self.ok, **asdict(self)}


def supports_health(store: Store) -> bool:
    """Whether ``store`` (or the store behind a boundary) answers the health query."""
    return isinstance(store.inner if isinstance(store, StoreBoundary) else store, HealthStore)


def check(
    store: Store,
    *,
    max_age: float = MAX_AGE,
    pending: int | None = None,
    now: float | None = None,
) -> Health:
    """The health of delivery from ``store``: two queries (the counts, and the oldest
    unreported confirmation's ``confirmed_at``). A store that fails gives ``unavailable``."""
    try:
        counts = store.counts()
        oldest = store.oldest_unreported() if supports_health(store) else None  # type: ignore[attr-defined]
    except StorageError:
        return Health("unavailable", None, None, None, pending, max_age)
    age = None if oldest is None else max(0.0, (time.time() if now is None else now) - oldest)
    state: HealthState
    if not supports_health(store):
        state = "unknown"
    elif age is not None and age > max_age:
        state = "behind"
    else:
        state = "ok"
    return Health(
        state,
        age,
        counts.get(State.CONFIRMED.value, 0),
        counts.get(State.FAILED.value, 0),
        pending,
        max_age,
    )
