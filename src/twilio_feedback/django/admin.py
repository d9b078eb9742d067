"""Read-only admins of the ``django://`` store: the records, states at a glance, and the
conversion insights' counts per day, country and sender."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from ..insights import TTC_BUCKETS
from ..report import within_bound
from .models import FeedbackDaily, FeedbackRecord

__all__ = ["FeedbackDailyAdmin", "FeedbackRecordAdmin", "ReadOnlyAdmin"]


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """An admin that shows and never writes: the store's own statements change these rows
    (records come from sent messages and go with the purge; the insights' counts change
    with the records they count and outlive them)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Nothing is added here."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Nothing is changed here."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Nothing is deleted here."""
        return False


@admin.register(FeedbackRecord)
class FeedbackRecordAdmin(ReadOnlyAdmin):
    """Lists records with their state; nothing can be added, changed or deleted here
    (``manage.py twilio_feedback retry-failed`` and ``purge`` do what an operator may)."""

    list_display = (
        "tracking_id",
        "state",
        "message_sid",
        "created",
        "confirmed",
        "expires",
        "attempts",
        "error_code",
    )
    list_filter = ("state",)
    search_fields = ("=tracking_id", "=message_sid")
    ordering = ("-created_at",)
    show_full_result_count = False
    fields = (*list_display, "account_sid", "lease_until", "error_message")
    readonly_fields = fields

    @admin.display(description="created", ordering="created_at")
    def created(self, record: FeedbackRecord) -> datetime | None:
        """When the message was tracked."""
        return record.created

    @admin.display(description="confirmed", ordering="confirmed_at")
    def confirmed(self, record: FeedbackRecord) -> datetime | None:
        """When the person acted."""
        return record.confirmed

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, record: FeedbackRecord) -> datetime | None:
        """When the record goes."""
        return record.expires


@admin.register(FeedbackDaily)
class FeedbackDailyAdmin(ReadOnlyAdmin):
    """The conversion insights' counts, one row per day (UTC), country and sender, with
    their conversion rate and time to confirm; read-only: the store counts in the
    statement of each change, and ``manage.py twilio_feedback report`` reads the same
    figures grouped as you ask."""

    list_display = (
        "sent_on",
        "country",
        "sender",
        "sent",
        "confirmed",
        "conversion",
        "reported",
        "failed",
        "ttc_p50",
        "ttc_p90",
    )
    list_filter = ("country",)
    search_fields = ("=country", "sender")
    ordering = ("-day", "country", "sender")
    show_full_result_count = False
    fields = (*list_display, "time_to_confirm")
    readonly_fields = fields

    @admin.display(description="day (UTC)", ordering="day")
    def sent_on(self, cell: FeedbackDaily) -> date:
        """The day the messages were sent."""
        return cell.sent_on

    @admin.display(description="conversion")
    def conversion(self, cell: FeedbackDaily) -> str:
        """Share of the messages sent that were confirmed."""
        rate = cell.row.conversion
        return "-" if rate is None else f"{rate * 100:.1f}%"

    @admin.display(description="ttc p50")
    def ttc_p50(self, cell: FeedbackDaily) -> str:
        """Median time to confirm (a bucket's upper bound)."""
        return within_bound(cell.row.ttc_p50)

    @admin.display(description="ttc p90")
    def ttc_p90(self, cell: FeedbackDaily) -> str:
        """90th percentile of the time to confirm (a bucket's upper bound)."""
        return within_bound(cell.row.ttc_p90)

    @admin.display(description="time to confirm")
    def time_to_confirm(self, cell: FeedbackDaily) -> str:
        """Confirmations per time-to-confirm bucket."""
        return ", ".join(
            f"{within_bound(bound)}: {count}"
            for bound, count in zip(TTC_BUCKETS, cell.row.ttc, strict=True)
        )
