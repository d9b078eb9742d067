"""Conversion insights: what share of the messages sent led to the action, and how fast.

Stores that keep insights count, per day (UTC, the day the message was sent), destination
country and sender: messages ``sent``, ``confirmed`` (the person acted), ``reported``
(Twilio accepted the feedback) and ``failed``, and the time from send to confirmation in
fixed buckets (:data:`TTC_BUCKETS`). These counts outlive the records: purging expired
records changes no past figure. :class:`Cell` is one such set of counts; :func:`summarize`
groups cells into :class:`InsightRow` rows by any of ``day``, ``country``, ``sender``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

__all__ = [
    "GROUPS",
    "TTC_BUCKETS",
    "UNKNOWN_COUNTRY",
    "UNKNOWN_SENDER",
    "Cell",
    "Group",
    "InsightRow",
    "Insights",
    "summarize",
    "ttc_bucket",
    "ttc_percentile",
]

TTC_BUCKETS: tuple[float, ...] = (
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    6 * 3600.0,
    24 * 3600.0,
    math.inf,
)
"""Upper bounds, in seconds, of the time-to-confirm buckets: a confirmation 25 s after its
message was sent counts in the ``<= 30 s`` bucket (index 1). The last bucket takes every
longer delay."""

UNKNOWN_COUNTRY = "XX"
"""The country of a message whose destination could not be placed (ISO 3166's code for an
unknown state)."""
UNKNOWN_SENDER = "unknown"
"""The sender of a message bound by hand without one."""

Group = Literal["day", "country", "sender"]
GROUPS: tuple[Group, ...] = ("day", "country", "sender")
"""The dimensions rows can be grouped by."""


def ttc_bucket(seconds: float) -> int:
    """The index in :data:`TTC_BUCKETS` of a time to confirm (negative delays, from clock
    skew, count as 0)."""
    for index, bound in enumerate(TTC_BUCKETS):
        if seconds <= bound:
            return index
    return len(TTC_BUCKETS) - 1  # pragma: no cover - the last bound is infinite


def ttc_percentile(histogram: Sequence[int], fraction: float) -> float | None:
    """The time to confirm within which ``fraction`` (0.5 for the median) of the
    confirmations happened: the upper bound of the bucket where the running count reaches
    that share (``inf`` for the last bucket); ``None`` without confirmations."""
    total = sum(histogram)
    if total == 0:
        return None
    needed = fraction * total
    running = 0
    for bound, count in zip(TTC_BUCKETS, histogram, strict=False):
        running += count
        if running >= needed:
            return bound
    return TTC_BUCKETS[-1]


def _empty_histogram() -> tuple[int, ...]:
    return (0,) * len(TTC_BUCKETS)


@dataclass(frozen=True, slots=True)
class Cell:
    """The counts a store keeps for one (day, country, sender)."""

    day: date
    country: str
    sender: str
    sent: int = 0
    confirmed: int = 0
    reported: int = 0
    failed: int = 0
    ttc: tuple[int, ...] = field(default_factory=_empty_histogram)
    """Confirmations per :data:`TTC_BUCKETS` bucket."""


@dataclass(frozen=True, slots=True)
class InsightRow:
    """Counts for one group. A dimension the rows are not grouped by is ``None``."""

    day: date | None
    country: str | None
    sender: str | None
    sent: int
    confirmed: int
    reported: int
    failed: int
    ttc: tuple[int, ...]
    """Confirmations per :data:`TTC_BUCKETS` bucket."""

    @property
    def conversion(self) -> float | None:
        """Share of the messages sent that were confirmed (0.0 to 1.0), or ``None`` when
        none were sent."""
        return self.confirmed / self.sent if self.sent else None

    @property
    def ttc_p50(self) -> float | None:
        """Median time to confirm, in seconds (a bucket's upper bound)."""
        return ttc_percentile(self.ttc, 0.5)

    @property
    def ttc_p90(self) -> float | None:
        """90th percentile of the time to confirm, in seconds (a bucket's upper bound)."""
        return ttc_percentile(self.ttc, 0.9)


@dataclass(frozen=True, slots=True)
class Insights:
    """What ``tracker.insights()`` returns: ``rows`` grouped ``by`` the given
    dimensions for the days ``since`` to ``until`` (both included), and ``available``:
    ``False`` when the store keeps no insights (a custom store that opts out), with
    ``note`` saying so."""

    rows: list[InsightRow]
    since: date
    until: date
    by: tuple[Group, ...]
    available: bool = True
    note: str | None = None


def summarize(cells: Iterable[Cell], by: Sequence[Group]) -> list[InsightRow]:
    """Group ``cells`` by the dimensions in ``by`` (in that order), sorted by them."""
    unknown = [name for name in by if name not in GROUPS]
    if unknown:
        raise ValueError(f"cannot group by {unknown[0]!r}: use any of {', '.join(GROUPS)}")
    totals: dict[tuple[object, ...], list[int]] = {}
    histograms: dict[tuple[object, ...], list[int]] = {}
    for cell in cells:
        key = tuple(getattr(cell, name) if name in by else None for name in GROUPS)
        counts = totals.setdefault(key, [0, 0, 0, 0])
        counts[0] += cell.sent
        counts[1] += cell.confirmed
        counts[2] += cell.reported
        counts[3] += cell.failed
        histogram = histograms.setdefault(key, [0] * len(TTC_BUCKETS))
        for index, count in enumerate(cell.ttc):
            histogram[index] += count
    rows = [
        InsightRow(
            day=key[0],  # type: ignore[arg-type]
            country=key[1],  # type: ignore[arg-type]
            sender=key[2],  # type: ignore[arg-type]
            sent=sent,
            confirmed=confirmed,
            reported=reported,
            failed=failed,
            ttc=tuple(histograms[key]),
        )
        for key, (sent, confirmed, reported, failed) in totals.items()
    ]
    order = [GROUPS.index(name) for name in by]
    rows.sort(key=lambda row: tuple(str((row.day, row.country, row.sender)[i]) for i in order))
    return rows
