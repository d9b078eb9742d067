"""A read-only admin of the ``django://`` store's records: states at a glance."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import FeedbackRecord

__all__ = ["FeedbackRecordAdmin"]


@admin.register(FeedbackRecord)
class FeedbackRecordAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
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

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Records come from sent messages only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """States change through the store's own statements only."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The purge deletes records, once they expire."""
        return False
