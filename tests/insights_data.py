"""A scripted dataset of insights: 45 days of traffic to seven countries from two senders,
France's conversion falling in the last week. The report tests and the screenshot on the
Conversion insights page (scripts/insights_screenshot.py) draw it."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import date, timedelta

from twilio_feedback.insights import TTC_BUCKETS, Cell, Group, Insights, summarize

UNTIL = date(2026, 11, 15)
DAYS = 45
SENDERS = ("+15005550006", "MG2f1c6a0e9b7d4c3a8e5f0b1d2c3e4f5a")
# country: (messages a day, conversion, conversion in the last 7 days)
COUNTRIES = {
    "US": (420, 0.86, 0.86),
    "GB": (160, 0.81, 0.80),
    "FR": (120, 0.83, 0.58),
    "DE": (90, 0.79, 0.80),
    "BR": (70, 0.66, 0.67),
    "IN": (60, 0.57, 0.55),
    "XX": (1, 0.90, 0.0),
}
# Share of confirmations per time-to-confirm bucket.
TTC_SHARES = (0.34, 0.28, 0.14, 0.09, 0.06, 0.03, 0.02, 0.015, 0.01, 0.01, 0.005)


def cells(*, until: date = UNTIL, days: int = DAYS, seed: int = 14) -> list[Cell]:
    """One cell per day, country and sender, the same every time."""
    rng = random.Random(seed)
    recent = until - timedelta(days=6)
    out = []
    for offset in range(days):
        day = until - timedelta(days=days - 1 - offset)
        for country, (volume, rate, late_rate) in COUNTRIES.items():
            for n, sender in enumerate(SENDERS):
                sent = max(0, round(volume * (0.7 if n == 0 else 0.3) * rng.uniform(0.8, 1.2)))
                target = late_rate if day >= recent else rate
                confirmed = sum(rng.random() < target for _ in range(sent))
                ttc = [0] * len(TTC_BUCKETS)
                for _ in range(confirmed):
                    ttc[rng.choices(range(len(TTC_BUCKETS)), TTC_SHARES)[0]] += 1
                failed = sum(rng.random() < 0.002 for _ in range(confirmed))
                out.append(
                    Cell(
                        day,
                        country,
                        sender,
                        sent,
                        confirmed,
                        confirmed - failed,
                        failed,
                        tuple(ttc),
                    )
                )
    return out


def insights(
    by: Sequence[Group] = ("day", "country"),
    *,
    since: date | None = None,
    until: date = UNTIL,
) -> Insights:
    """The dataset's insights from ``since`` (default: the last 30 days) to ``until``."""
    since = since or until - timedelta(days=29)
    chosen = [cell for cell in cells() if since <= cell.day <= until]
    return Insights(summarize(chosen, by), since, until, tuple(by))


class Source:
    """A stand-in for a tracker's ``insights()`` over the dataset; it records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[date | None, date | None, tuple[Group, ...]]] = []

    def insights(
        self,
        since: date | None = None,
        until: date | None = None,
        by: Sequence[Group] = ("day", "country"),
    ) -> Insights:
        self.calls.append((since, until, tuple(by)))
        return insights(by, since=since, until=until or UNTIL)
