"""The benchmarks' records (bench/fill.py) are the records the library writes."""

from __future__ import annotations

import dataclasses

from bench import fill

from twilio_feedback import FeedbackTracker, Record

SID = "SM" + "a" * 32
SUBACCOUNT = "AC" + "b" * 32


def _shape(record: Record) -> dict[str, object]:
    """The fields a store keeps, but the ones that differ from message to message."""
    data = dataclasses.asdict(record)
    for name in ("tracking_id", "message_sid", "created_at", "expires_at"):
        data.pop(name)
    return data


def test_filled_records_are_what_bind_writes(tracker: FeedbackTracker) -> None:
    for subaccount in (None, SUBACCOUNT):
        ticket = tracker.ticket()
        # Without insights, as the benchmarks fill (they add country and sender where
        # they measure them).
        tracker.bind(ticket, SID, account_sid=subaccount or tracker.settings.account_sid)
        bound = tracker.store.get(ticket.tracking_id)
        assert bound is not None
        [filled] = fill.records(1, subaccount=subaccount)
        assert _shape(filled.record) == _shape(bound) | {"country": None, "sender": None}
        assert filled.record.account_sid == subaccount  # the own account's: None
