"""The table of the ``django://`` store, as a model: for migrations and the admin.

The store itself reads and writes it with SQL of its own (one statement per operation,
see :mod:`twilio_feedback.django.store`); the model is not a way to change records.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from django.db import models

from ..insights import (
    CELL_COLUMNS,
    EPOCH,
    GROUPS,
    MAX_SENDER_LENGTH,
    InsightRow,
    cell_from_counts,
    summarize,
)
from ..records import State
from ..stores.base import ERROR_MESSAGE_LENGTH
from .store import DAILY_TABLE, TABLE

__all__ = ["FeedbackDaily", "FeedbackRecord"]


def _when(timestamp: float | None) -> datetime | None:
    if not timestamp:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc)


class FeedbackRecord(models.Model):
    """One tracked message (a :class:`~twilio_feedback.Record`). Times are Unix
    timestamps, as every store keeps them."""

    tracking_id: models.CharField[str, str] = models.CharField(max_length=64, primary_key=True)
    state: models.CharField[str, str] = models.CharField(
        max_length=16, choices=[(s.value, s.value) for s in State]
    )
    message_sid: models.CharField[str | None, str | None] = models.CharField(
        max_length=34, null=True, blank=True
    )
    account_sid: models.CharField[str | None, str | None] = models.CharField(
        max_length=34, null=True, blank=True
    )
    expires_at: models.FloatField[float, float] = models.FloatField()
    created_at: models.FloatField[float, float] = models.FloatField(default=0.0)
    confirmed_at: models.FloatField[float | None, float | None] = models.FloatField(
        null=True, blank=True
    )
    lease_until: models.FloatField[float, float] = models.FloatField(default=0.0)
    attempts: models.IntegerField[int, int] = models.IntegerField(default=0)
    error_code: models.IntegerField[int | None, int | None] = models.IntegerField(
        null=True, blank=True
    )
    error_message: models.CharField[str | None, str | None] = models.CharField(
        max_length=ERROR_MESSAGE_LENGTH, null=True, blank=True
    )
    country: models.CharField[str | None, str | None] = models.CharField(
        max_length=2, null=True, blank=True
    )
    sender: models.CharField[str | None, str | None] = models.CharField(
        max_length=MAX_SENDER_LENGTH, null=True, blank=True
    )

    class Meta:
        db_table = TABLE
        verbose_name = "feedback record"
        indexes = [
            # The outbox: only what waits to be reported (the store's SQL says
            # state = 'confirmed' as a literal, so the planner can use it).
            models.Index(
                fields=["lease_until"],
                condition=models.Q(state=State.CONFIRMED.value),
                name="twilio_feedback_due",
            ),
            models.Index(fields=["expires_at"], name="twilio_feedback_expiry"),
        ]

    def __str__(self) -> str:
        return f"{self.tracking_id} ({self.state})"

    @property
    def created(self) -> datetime | None:
        """When the message was tracked."""
        return _when(self.created_at)

    @property
    def confirmed(self) -> datetime | None:
        """When the person acted."""
        return _when(self.confirmed_at)

    @property
    def expires(self) -> datetime | None:
        """When the record goes (the purge deletes it)."""
        return _when(self.expires_at)


class FeedbackDaily(models.Model):
    """The conversion insights' counts of one (day, country, sender): a
    :class:`~twilio_feedback.insights.Cell` (``day`` is days since 1970-01-01, UTC;
    ``ttc_<i>`` the confirmations in time-to-confirm bucket ``i``). The store upserts them
    in the statement or transaction of the change they count."""

    id: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    day: models.IntegerField[int, int] = models.IntegerField()
    country: models.CharField[str, str] = models.CharField(max_length=2)
    sender: models.CharField[str, str] = models.CharField(max_length=MAX_SENDER_LENGTH)
    sent: models.IntegerField[int, int] = models.IntegerField(default=0)
    confirmed: models.IntegerField[int, int] = models.IntegerField(default=0)
    reported: models.IntegerField[int, int] = models.IntegerField(default=0)
    failed: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_0: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_1: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_2: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_3: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_4: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_5: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_6: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_7: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_8: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_9: models.IntegerField[int, int] = models.IntegerField(default=0)
    ttc_10: models.IntegerField[int, int] = models.IntegerField(default=0)

    class Meta:
        db_table = DAILY_TABLE
        verbose_name = "insights day"
        constraints = [
            models.UniqueConstraint(
                fields=["day", "country", "sender"], name="twilio_feedback_daily_cell"
            )
        ]

    def __str__(self) -> str:
        return f"{self.sent_on} {self.country} {self.sender}"

    @property
    def sent_on(self) -> date:
        """The day (UTC) the messages were sent."""
        return EPOCH + timedelta(days=self.day)

    @property
    def row(self) -> InsightRow:
        """These counts as an :class:`~twilio_feedback.insights.InsightRow`: with their
        conversion rate and time-to-confirm percentiles."""
        counts = [getattr(self, name) for name in CELL_COLUMNS]
        return summarize([cell_from_counts(self.day, self.country, self.sender, counts)], GROUPS)[0]
