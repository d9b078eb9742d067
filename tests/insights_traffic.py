"""A scripted, known traffic pattern for the conversion insights, and the figures it gives.

Four UTC days: three past ones written into a store as the tracker writes them (the same
``add``, ``confirm``, ``mark_reported``, ``mark_failed`` and ``delete`` calls, with
``created_at`` and the confirm's ``now`` set by the script), then today's messages sent
through a real tracker and FakeTwilio (:func:`play_today`). The figures every store must
give for it are written out by hand below (:data:`BY_DAY_COUNTRY`, :data:`BY_COUNTRY`,
:data:`BY_SENDER`, :data:`TOTAL`), not computed from the script, so that the acceptance test
checks the stores and ``insights.summarize`` against numbers a person worked out.

Used by tests/test_insights_acceptance.py; the CLI and report tests can play the same traffic
and compare their output with the same figures.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import date, timedelta

from twilio_feedback import FeedbackTracker
from twilio_feedback.insights import EPOCH, UNKNOWN_COUNTRY, UNKNOWN_SENDER, day_number
from twilio_feedback.records import Record
from twilio_feedback.stores import Store
from twilio_feedback.testing import FakeTwilio

__all__ = [
    "BY_COUNTRY",
    "BY_DAY_COUNTRY",
    "BY_SENDER",
    "PAST",
    "S1",
    "S2",
    "TOTAL",
    "Batch",
    "Figures",
    "play_past",
    "play_today",
    "today",
]

S1 = "+15017122661"
"""A sender number."""
S2 = "MG" + "5" * 32
"""A messaging service."""
DAY = 86400.0
SID = "SM" + "ab" * 16
ACCOUNT = "AC" + "cd" * 16
INF = math.inf


@dataclass(frozen=True)
class Batch:
    """Messages sent ``days_ago`` to one country from one sender: ``sent`` of them, the
    first ``len(delays)`` confirmed that many seconds after their send, the first
    ``reported`` of those reported, the next ``failed`` failed; ``refused`` more sends
    Twilio refused (written, then deleted: not counted). ``country`` ``None``: bound by
    hand without a country or sender."""

    days_ago: int
    country: str | None
    sender: str | None
    sent: int
    delays: tuple[float, ...] = ()
    reported: int = 0
    failed: int = 0
    refused: int = 0


PAST = (
    Batch(3, "US", S1, 10, (5, 8, 12, 20, 25, 45, 90, 400), reported=7, failed=1),
    Batch(3, "FR", S1, 4, (3600,), reported=1, refused=1),
    Batch(2, "US", S1, 5, (1, 2, 3, 4, 5), reported=5),
    Batch(2, "US", S2, 5),
    Batch(2, "BR", S2, 6, (100, 200, 2 * DAY), reported=2),
    Batch(1, "FR", S2, 2, (30, 31), failed=2),
    Batch(1, None, None, 3, (10,), reported=1),
)
"""The three past days."""


@dataclass(frozen=True)
class Figures:
    """One row's expected figures."""

    sent: int
    confirmed: int
    reported: int
    failed: int
    p50: float | None
    p90: float | None

    @property
    def conversion(self) -> float:
        """confirmed / sent."""
        return self.confirmed / self.sent


BY_DAY_COUNTRY: dict[tuple[int, str], Figures] = {
    # 8 confirmed: <=10 s 2, <=30 s 3, <=60 s 1, <=120 s 1, <=600 s 1.
    (3, "US"): Figures(10, 8, 7, 1, 30, 600),
    (3, "FR"): Figures(4, 1, 1, 0, 3600, 3600),  # the refused send not counted
    (2, "US"): Figures(10, 5, 5, 0, 10, 10),  # both senders
    (2, "BR"): Figures(6, 3, 2, 0, 300, INF),  # one confirmed two days later
    (1, "FR"): Figures(2, 2, 0, 2, 30, 60),
    (1, "XX"): Figures(3, 1, 1, 0, 10, 10),
    (0, "US"): Figures(2, 1, 1, 0, 10, 10),  # today, through the tracker
    (0, "FR"): Figures(1, 0, 0, 0, None, None),
}
"""``by=("day", "country")``: (days ago, country) -> figures."""

BY_COUNTRY: dict[str, Figures] = {
    "BR": Figures(6, 3, 2, 0, 300, INF),
    "FR": Figures(7, 3, 1, 2, 60, 3600),
    "US": Figures(22, 14, 13, 1, 10, 120),
    "XX": Figures(3, 1, 1, 0, 10, 10),
}
"""``by=("country",)`` over the four days."""

BY_SENDER: dict[str, Figures] = {
    S1: Figures(22, 15, 14, 1, 10, 600),
    S2: Figures(13, 5, 2, 2, 120, INF),
    UNKNOWN_SENDER: Figures(3, 1, 1, 0, 10, 10),
}
"""``by=("sender",)`` over the four days."""

TOTAL = Figures(38, 21, 17, 3, 30, 600)
"""``by=()`` over the four days."""


def today() -> date:
    """Today, UTC."""
    return EPOCH + timedelta(days=day_number(time.time()))


def play_past(store: Store, *, short_ttl: float) -> list[str]:
    """Write :data:`PAST` into ``store``; return the tracking ids of the records that
    expire ``short_ttl`` seconds from now (the unconfirmed messages of three days ago),
    so that a test sees expiry and purge in between. Every other record lives two days."""
    now = time.time()
    midnight = day_number(now) * DAY
    expiring: list[str] = []
    for batch in PAST:
        start = midnight - batch.days_ago * DAY + 600
        country = batch.country or UNKNOWN_COUNTRY
        sender = batch.sender or UNKNOWN_SENDER
        prefix = f"{batch.days_ago}-{country}-{sender}"
        for n in range(batch.refused):
            tracking_id = f"{prefix}-refused{n}"
            store.add(
                Record(
                    tracking_id,
                    expires_at=now + 2 * DAY,
                    created_at=start,
                    country=country,
                    sender=sender,
                )
            )
            store.delete(tracking_id)  # Twilio refused it: the record goes away
        for n in range(batch.sent):
            tracking_id = f"{prefix}-{n}"
            created_at = start + 60 * n
            confirmed = n < len(batch.delays)
            short = batch.days_ago == 3 and not confirmed
            store.add(
                Record(
                    tracking_id,
                    expires_at=now + (short_ttl if short else 2 * DAY),
                    message_sid=SID,
                    account_sid=ACCOUNT,
                    created_at=created_at,
                    country=country,
                    sender=sender,
                )
            )
            if short:
                expiring.append(tracking_id)
            if not confirmed:
                continue
            at = created_at + batch.delays[n]
            # Leased for two days: no reporter takes what the script leaves confirmed.
            won, _ = store.confirm(
                tracking_id, now=at, lease_until=now + 2 * DAY, keep_until=at + 3600
            )
            assert won, tracking_id
            if n < batch.reported:
                assert store.mark_reported(tracking_id, SID)
            elif n < batch.reported + batch.failed:
                assert store.mark_failed(tracking_id, SID, code=21610, message="unsubscribed")
    return expiring


def play_today(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    """Today's messages, through ``tracker`` and FakeTwilio: two to the US and one to
    France from :data:`S1`, a send Twilio refuses, one confirmation, reported."""
    from twilio.base.exceptions import TwilioRestException

    for key, to in (("us-1", "+14155550100"), ("us-2", "+12125550199"), ("fr", "+33612345678")):
        tracker.send(to=to, from_=S1, body="Your code: 123456", key=f"today-{key}")
    try:
        tracker.send(to="", from_=S1, body="Your code: 0", key="today-refused")
    except TwilioRestException:
        pass
    else:  # pragma: no cover - FakeTwilio refuses a message without a destination
        raise AssertionError("FakeTwilio accepted a message without a destination")
    assert tracker.confirm(key="today-us-1").confirmed
    assert tracker.flush(10) == 0
    assert len(fake_twilio.feedback) == 1
