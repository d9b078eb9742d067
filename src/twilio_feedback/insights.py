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
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = [
    "CELL_COLUMNS",
    "CELL_KEY",
    "COUNTS",
    "EPOCH",
    "GROUPS",
    "MAX_SENDER_LENGTH",
    "TTC_BUCKETS",
    "TTC_COLUMNS",
    "UNKNOWN_COUNTRY",
    "UNKNOWN_SENDER",
    "Cell",
    "Group",
    "InsightRow",
    "Insights",
    "cell_from_counts",
    "check_country",
    "check_sender",
    "country_of",
    "day_number",
    "read",
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

MAX_SENDER_LENGTH = 64
"""The longest sender a store keeps (a phone number, a messaging service SID, an alphanumeric
sender id)."""

EPOCH = date(1970, 1, 1)
"""Day 0 of :func:`day_number`."""

COUNTS = ("sent", "confirmed", "reported", "failed")
"""The counts of a cell, in the order stores keep them (then the :data:`TTC_BUCKETS`)."""

_COUNTRY = re.compile(r"[A-Z]{2}")

Group = Literal["day", "country", "sender"]
GROUPS: tuple[Group, ...] = ("day", "country", "sender")
"""The dimensions rows can be grouped by."""

CELL_KEY: tuple[Group, ...] = GROUPS
"""The key of a cell (one per day, country and sender): the key columns of the SQL and
Django stores' daily tables."""
TTC_COLUMNS: tuple[str, ...] = tuple(f"ttc_{index}" for index in range(len(TTC_BUCKETS)))
"""The daily tables' column of each :data:`TTC_BUCKETS` bucket (``ttc_0`` ...)."""
CELL_COLUMNS: tuple[str, ...] = (*COUNTS, *TTC_COLUMNS)
"""The counting columns of the daily tables, in :func:`cell_from_counts`' order."""


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


def day_number(timestamp: float) -> int:
    """The UTC day of a Unix timestamp, as days since 1970-01-01: the key of a cell's day
    in a store (``EPOCH + timedelta(days=n)`` is the date)."""
    return int(timestamp // 86400)


def country_of(number: str | None) -> str:
    """The ISO 3166 alpha-2 country of an E.164 phone number (``+14155550100`` -> ``US``),
    or :data:`UNKNOWN_COUNTRY` when it cannot be placed (not a number, a short code, a
    channel address such as ``whatsapp:+...`` is read by its number).

    Uses ``phonenumberslite`` (a dependency of this package), imported on first use;
    without it every country is unknown. The number itself is never kept.
    """
    if not number:
        return UNKNOWN_COUNTRY
    number = number.rpartition(":")[2].strip()
    if not number.startswith("+"):
        return UNKNOWN_COUNTRY
    try:
        import phonenumbers
    except ImportError:  # pragma: no cover - a dependency; kept working without it
        return UNKNOWN_COUNTRY
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return UNKNOWN_COUNTRY
    # A valid number names its region (+1 250 ... is CA); one outside the known ranges
    # (a new block, a number reserved for fiction) still has its calling code's main one.
    region = phonenumbers.region_code_for_number(parsed) or (
        phonenumbers.region_code_for_country_code(parsed.country_code or 0)
    )
    return region if region and _COUNTRY.fullmatch(region) and region != "ZZ" else UNKNOWN_COUNTRY


def check_country(country: str) -> str:
    """``country`` if it is an ISO 3166 alpha-2 code (two capital letters; ``XX`` for
    unknown); ``ValueError`` otherwise."""
    if not isinstance(country, str) or not _COUNTRY.fullmatch(country):
        raise ValueError(
            f"country {str(country)[:16]!r} is not an ISO 3166 alpha-2 code (two capital "
            f"letters, such as 'US'; {UNKNOWN_COUNTRY!r} when unknown)"
        )
    return country


def check_sender(sender: str) -> str:
    """``sender`` if a store can keep it (1 to :data:`MAX_SENDER_LENGTH` characters);
    ``ValueError`` otherwise."""
    if not isinstance(sender, str) or not 0 < len(sender) <= MAX_SENDER_LENGTH:
        raise ValueError(
            f"sender must be 1 to {MAX_SENDER_LENGTH} characters (a phone number or a "
            "messaging service SID)"
        )
    return sender


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


def cell_from_counts(day: int, country: str, sender: str, counts: Sequence[int]) -> Cell:
    """A :class:`Cell` from a store's counts: :data:`COUNTS` then the :data:`TTC_BUCKETS`
    histogram, for day number ``day`` (:func:`day_number`)."""
    sent, confirmed, reported, failed = counts[:4]
    return Cell(
        EPOCH + timedelta(days=day),
        country,
        sender,
        sent=sent,
        confirmed=confirmed,
        reported=reported,
        failed=failed,
        ttc=tuple(counts[4 : 4 + len(TTC_BUCKETS)]),
    )


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


def read(store: Store, since: date, until: date, by: Sequence[Group]) -> Insights:
    """The insights ``store`` keeps for the days ``since`` to ``until`` (both included),
    grouped ``by``: what ``tracker.insights()`` and ``twilio-feedback report`` read. A store
    without :class:`~twilio_feedback.stores.InsightsStore` gives no rows,
    ``available=False`` and a ``note`` saying so."""
    from .stores.base import InsightsStore
    from .stores.boundary import StoreBoundary

    by = tuple(by)
    summarize((), by)  # refuses an unknown dimension, whatever the store
    inner = store.inner if isinstance(store, StoreBoundary) else store
    if not isinstance(inner, InsightsStore):
        note = (
            f"the store ({type(inner).__name__}) keeps no conversion insights: "
            "it does not implement InsightsStore"
        )
        return Insights([], since, until, by, available=False, note=note)
    cells = store.insight_cells(since, until)  # type: ignore[attr-defined]
    # A cell left at zero (a send Twilio refused, taken back) is no row; the days are
    # kept to, whatever the store returns.
    kept = (
        cell
        for cell in cells
        if since <= cell.day <= until
        and (cell.sent or cell.confirmed or cell.reported or cell.failed)
    )
    return Insights(summarize(kept, by), since, until, by)
