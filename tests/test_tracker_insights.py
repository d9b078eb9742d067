"""What the tracker keeps for the conversion insights, and ``tracker.insights()``."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone

import pytest
from twilio.base.exceptions import TwilioRestException

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.insights import TTC_BUCKETS
from twilio_feedback.stores import REQUIRED_METHODS
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.tracker import key_tracking_id

FR_PHONE = "+33612345678"
SENDER = "+15017122661"
SERVICE = "MG" + "0123456789abcdef" * 2


class PlainStore:
    """A custom store with the Store methods only: no insights."""

    def __init__(self) -> None:
        self.memory = MemoryStore()


for _name in REQUIRED_METHODS:
    setattr(
        PlainStore,
        _name,
        lambda self, *args, _name=_name, **kwargs: getattr(self.memory, _name)(*args, **kwargs),
    )


def test_send_keeps_the_country_and_sender_never_the_number(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    tracker.send(to=FR_PHONE, from_=SENDER, body="code 1", key="a")
    tracker.send(to="+14155550100", body="code 2", key="b", messaging_service_sid=SERVICE)
    tracker.send(to="whatsapp:+447700900123", from_="whatsapp:" + SENDER, body="3", key="c")
    a, b, c = (tracker.store.get(key_tracking_id(key)) for key in "abc")
    assert a is not None
    assert b is not None
    assert c is not None
    assert (a.country, a.sender) == ("FR", SENDER)
    assert (b.country, b.sender) == ("US", SERVICE)
    assert (c.country, c.sender) == ("GB", "whatsapp:" + SENDER)
    for record, number in ((a, FR_PHONE), (b, "+14155550100")):
        assert number not in repr(record)
        assert number.lstrip("+") not in repr(record)


def test_a_refused_send_is_not_counted(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    with pytest.raises(TwilioRestException):
        tracker.send(to="", from_=SENDER, body="code 1", key="k")
    tracker.send(to=FR_PHONE, from_=SENDER, body="code 2", key="j")
    [row] = tracker.insights(by=("country",)).rows
    assert (row.country, row.sent) == ("FR", 1)


def test_bind_takes_a_country_and_a_sender(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    sids = fake_twilio.add_messages(2)
    record = tracker.bind(key="a", message_sid=sids[0], country="DE", sender=SENDER)
    assert (record.country, record.sender) == ("DE", SENDER)
    record = tracker.bind(key="b", message_sid=sids[1])
    assert (record.country, record.sender) == ("XX", "unknown")
    with pytest.raises(ValueError, match="ISO 3166 alpha-2"):
        tracker.bind(key="c", message_sid=sids[1], country="de")
    with pytest.raises(ValueError, match="sender must be"):
        tracker.bind(key="c", message_sid=sids[1], sender="x" * 65)
    with pytest.raises(ValueError, match="ISO 3166 alpha-2"):
        asyncio.run(tracker.bind_async(key="c", message_sid=sids[1], country="Germany"))
    assert tracker.store.get(key_tracking_id("c")) is None


def test_insights_count_sends_confirmations_and_reports(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    for n in range(4):
        tracker.send(to=FR_PHONE, from_=SENDER, body="code", key=f"fr{n}")
    tracker.send(to="+14155550100", from_=SENDER, body="code", key="us")
    for n in range(3):
        assert tracker.confirm(key=f"fr{n}").confirmed
    assert tracker.confirm(key="fr0").status == "duplicate"
    assert tracker.flush(10) == 0
    insights = tracker.insights()
    today = datetime.now(timezone.utc).date()
    assert (insights.since, insights.until, insights.by) == (
        today - timedelta(days=29),
        today,
        ("day", "country"),
    )
    assert insights.available
    assert insights.note is None
    fr, us = insights.rows
    assert (fr.day, fr.country, fr.sender) == (today, "FR", None)
    assert (fr.sent, fr.confirmed, fr.reported, fr.failed) == (4, 3, 3, 0)
    assert fr.conversion == 0.75
    assert fr.ttc_p50 == fr.ttc_p90 == TTC_BUCKETS[0]
    assert (us.country, us.sent, us.confirmed, us.conversion, us.ttc_p50) == ("US", 1, 0, 0, None)
    [total] = tracker.insights(by=()).rows
    assert (total.day, total.country, total.sent, total.confirmed) == (None, None, 5, 3)
    [by_sender] = asyncio.run(tracker.insights_async(by=("sender",))).rows
    assert (by_sender.sender, by_sender.sent) == (SENDER, 5)


def test_insights_periods(tracker: FeedbackTracker) -> None:
    today = datetime.now(timezone.utc).date()
    week = tracker.insights(since=timedelta(days=7))
    assert (week.since, week.until) == (today - timedelta(days=7), today)
    day = date(2026, 3, 1)
    assert (tracker.insights(since=day, until=day).since) == day
    late = datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert tracker.insights(since=late, until=late).since == date(2026, 3, 2)  # UTC
    naive = datetime(2026, 3, 1, 23, 30)
    assert tracker.insights(since=naive, until=naive).until == day  # read as UTC
    with pytest.raises(ValueError, match="after until"):
        tracker.insights(since=today, until=today - timedelta(days=1))
    with pytest.raises(ValueError, match="cannot group by 'week'"):
        tracker.insights(by=("week",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="date, datetime or timedelta"):
        tracker.insights(since="7d")  # type: ignore[arg-type]


def test_a_store_without_insights_says_so(settings: Settings, fake_twilio: FakeTwilio) -> None:
    with FeedbackTracker(settings, store=PlainStore()) as tracker:
        insights = tracker.insights(by=("country",))
        assert not insights.available
        assert insights.rows == []
        assert insights.note is not None
        assert "PlainStore" in insights.note
        assert "InsightsStore" in insights.note
        with pytest.raises(ValueError, match="cannot group by"):
            tracker.insights(by=("week",))  # type: ignore[arg-type]


def test_insights_off(settings: Settings, fake_twilio: FakeTwilio) -> None:
    with FeedbackTracker(settings, insights=False) as tracker:
        tracker.send(to=FR_PHONE, from_=SENDER, body="code", key="a")
        record = tracker.bind(key="b", message_sid=fake_twilio.add_messages(1)[0], country="FR")
        assert (record.country, record.sender) == (None, None)
        assert tracker.confirm(key="a").country is None
        insights = tracker.insights()
        assert insights.available
        assert insights.rows == []
        assert insights.note == "insights are off: new messages are not counted"


def test_the_docs_snippets(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    # docs/tracking.md, "Conversion insights"
    from twilio_feedback.insights import country_of

    phone = FR_PHONE
    sids = fake_twilio.add_messages(2)
    ticket = tracker.ticket()
    tracker.bind(ticket, sids[0], country="FR", sender="+15017122661")
    tracker.bind(key="login:42", message_sid=sids[1], country=country_of(phone))
    assert tracker.confirm(key="login:42").confirmed

    insights = tracker.insights(since=timedelta(days=7), by=("country",))
    for row in insights.rows:
        rate = f"{row.conversion:.0%}"
        print(row.country, row.sent, row.confirmed, rate, row.ttc_p50, row.ttc_p90)
    assert capsys.readouterr().out == "FR 2 1 50% 10.0 10.0\n"
    assert tracker.flush(10) == 0
