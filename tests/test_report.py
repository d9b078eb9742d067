"""Rendering insights (twilio_feedback.report): the declining-country flags, and the table,
JSON, CSV and HTML drawn from hand-made insights."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest

from twilio_feedback import report
from twilio_feedback.insights import TTC_BUCKETS, Cell, InsightRow, Insights, summarize
from twilio_feedback.report import Decline, declining, duration

from . import insights_data

UNTIL = date(2026, 11, 15)


def hist(**counts: int) -> tuple[int, ...]:
    values = [0] * len(TTC_BUCKETS)
    for name, count in counts.items():
        values[int(name[1:])] = count
    return tuple(values)


def day(offset: int) -> date:
    """``offset`` days before UNTIL."""
    return UNTIL - timedelta(days=offset)


def row(offset: int, country: str, sent: int, confirmed: int) -> InsightRow:
    return InsightRow(day(offset), country, None, sent, confirmed, confirmed, 0, hist(b0=confirmed))


# -- flags ------------------------------------------------------------------------------------


def test_a_country_whose_last_week_falls_below_its_previous_month_is_flagged() -> None:
    rows = [
        # FR: 90% over the 30 days before the last 7, 70% in the last 7: 20 points down.
        row(10, "FR", 100, 90),
        row(36, "FR", 100, 90),  # the first day of the baseline
        row(0, "FR", 50, 35),
        row(6, "FR", 50, 35),  # the first day of the recent period
        row(37, "FR", 1000, 0),  # before the baseline: ignored
        # US: steady.
        row(20, "US", 200, 170),
        row(2, "US", 100, 85),
        # DE: down 10 points exactly: not more than the margin.
        row(20, "DE", 100, 80),
        row(3, "DE", 100, 70),
        # BR: down 40 points, on too few messages to tell.
        row(20, "BR", 49, 40),
        row(3, "BR", 60, 24),
    ]
    flags = declining(rows, UNTIL)
    assert flags == [Decline("FR", 100, 70, 200, 180)]
    (fr,) = flags
    assert (fr.recent, fr.baseline, fr.drop) == pytest.approx((0.7, 0.9, 0.2))

    assert [f.country for f in declining(rows, UNTIL, margin=0.05)] == ["FR", "DE"]
    assert [f.country for f in declining(rows, UNTIL, min_sent=40)] == ["BR", "FR"]
    assert declining(rows, UNTIL, margin=0.25) == []
    # The periods end on the given day: a week later, FR's drop is the baseline's.
    assert declining(rows, UNTIL + timedelta(days=7)) == []


def test_flags_need_rows_by_day_and_country() -> None:
    by_country = InsightRow(None, "FR", None, 100, 50, 50, 0, hist())
    with pytest.raises(ValueError, match="grouped by day and country"):
        declining([by_country], UNTIL)
    with pytest.raises(ValueError, match="margin"):
        declining([], UNTIL, margin=1.5)
    with pytest.raises(ValueError, match="min_sent"):
        declining([], UNTIL, min_sent=0)
    assert declining([], UNTIL) == []


def test_flags_from_rows_by_day_country_and_sender_add_up_the_senders() -> None:
    cells = [
        Cell(day(20), "FR", "a", sent=60, confirmed=54),
        Cell(day(20), "FR", "b", sent=60, confirmed=54),
        Cell(day(1), "FR", "a", sent=30, confirmed=20),
        Cell(day(1), "FR", "b", sent=30, confirmed=20),
    ]
    insights = Insights(
        summarize(cells, ("day", "country", "sender")), day(36), UNTIL, ("day", "country", "sender")
    )
    built = report.build(insights)
    assert [(f.country, f.recent_sent, f.baseline_sent) for f in built.declines] == [
        ("FR", 60, 120)
    ]


# -- collect ----------------------------------------------------------------------------------


def test_collect_asks_once_when_the_table_has_what_the_flags_need() -> None:
    source = insights_data.Source()
    built = report.collect(source, since=day(44), until=UNTIL, by=("country", "day"))
    assert source.calls == [(day(44), UNTIL, ("country", "day"))]
    assert [f.country for f in built.declines] == ["FR"]
    # The chart covers the table's days only.
    assert {r.day for r in built.daily} == {day(n) for n in range(45)}


def test_collect_asks_for_the_daily_figures_when_the_table_lacks_them() -> None:
    source = insights_data.Source()
    built = report.collect(source, since=day(6), until=UNTIL, by=("sender",))
    assert source.calls == [
        (day(6), UNTIL, ("sender",)),
        (day(36), UNTIL, ("day", "country")),
    ]
    assert [f.country for f in built.declines] == ["FR"]
    assert {r.day for r in built.daily} == {day(n) for n in range(7)}
    assert [r.sender for r in built.insights.rows] == sorted(insights_data.SENDERS)


def test_collect_of_a_store_without_insights() -> None:
    class Empty:
        def insights(
            self, since: date | None = None, until: date | None = None, by: object = ()
        ) -> Insights:
            return Insights(
                [], since or UNTIL, until or UNTIL, ("day",), available=False, note="keeps none"
            )

    built = report.collect(Empty(), since=UNTIL, until=UNTIL)
    assert not built.insights.available
    assert "keeps none" in report.to_text(built)
    assert json.loads(report.to_json(built))["available"] is False


# -- the formats --------------------------------------------------------------------------------


def small() -> report.Report:
    """Two countries over two days; FR declining; US's p90 past a day."""
    rows = [
        InsightRow(day(1), "FR", None, 1200, 1000, 990, 10, hist(b0=600, b1=300, b3=100)),
        InsightRow(day(1), "US", None, 10, 9, 9, 0, hist(b2=5, b10=4)),
        InsightRow(day(0), "US", None, 3, 0, 0, 0, hist()),
    ]
    flag = Decline("FR", 1200, 1000, 5000, 4800)
    insights = Insights(rows, day(1), UNTIL, ("day", "country"))
    return report.Report(insights, rows, [flag], margin=0.1, min_sent=50)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (10.0, "10 s"),
        (60.0, "1 min"),
        (1800.0, "30 min"),
        (3600.0, "1 h"),
        (21600.0, "6 h"),
        (86400.0, "1 day"),
        (math.inf, "> 1 day"),
    ],
)
def test_durations_read_as_people_say_them(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_the_table_is_aligned_with_a_total_and_the_flags() -> None:
    text = report.to_text(small())
    lines = text.splitlines()
    assert lines[0] == "Conversion insights, 2026-11-14 to 2026-11-15 (UTC)"
    header = lines[2]
    assert header.split() == [
        "day",
        "country",
        "sent",
        "confirmed",
        "conversion",
        "reported",
        "failed",
        "ttc",
        "p50",
        "ttc",
        "p90",
        "flag",
    ]
    body = lines[3:6]
    assert body[0].split() == [
        "2026-11-14",
        "FR",
        "1,200",
        "1,000",
        "83.3%",
        "990",
        "10",
        "10",
        "s",
        "30",
        "s",
        "declining",
    ]
    assert body[1].split() == [
        "2026-11-14",
        "US",
        "10",
        "9",
        "90.0%",
        "9",
        "0",
        "1",
        "min",
        ">",
        "1",
        "day",
    ]
    assert body[2].split() == ["2026-11-15", "US", "3", "0", "0.0%", "0", "0", "-", "-"]
    # Numbers are right-aligned under their header: each column ends where its header does.
    for name in ("sent", "confirmed", "conversion", "failed", "ttc p90"):
        end = header.index(name) + len(name)
        for line in body:
            assert line[end - 1] != " ", (name, line)
            assert line[end : end + 1] in {"", " "}, (name, line)
    assert set(lines[6]) == {"-", " "}
    assert lines[7].split()[:6] == ["total", "1,213", "1,009", "83.2%", "999", "10"]
    assert (
        "  FR: 83.3% in the last 7 days (1,200 sent) against 96.0% in the previous 30 "
        "(5,000 sent): down 12.7 points" in lines
    )
    assert "margin 10 points, at least 50 messages in each" in text


def test_the_table_without_flags_or_rows() -> None:
    empty = report.Report(Insights([], day(29), UNTIL, ("day", "country")))
    text = report.to_text(empty)
    assert "no messages sent in this period" in text
    assert text.rstrip().endswith("none")
    assert "flag" not in text.splitlines()[2]


def test_json_has_stable_names_numbers_and_nulls() -> None:
    made = datetime(2026, 11, 15, 12, 0, tzinfo=timezone.utc)
    data = json.loads(report.to_json(small()))
    assert list(data) == [
        "since",
        "until",
        "by",
        "available",
        "note",
        "ttc_buckets",
        "rows",
        "total",
        "declining",
    ]
    assert data["since"] == "2026-11-14"
    assert data["by"] == ["day", "country"]
    assert data["ttc_buckets"] == [*TTC_BUCKETS[:-1], None]
    fr, us, us_today = data["rows"]
    assert fr == {
        "day": "2026-11-14",
        "country": "FR",
        "sent": 1200,
        "confirmed": 1000,
        "conversion": pytest.approx(1000 / 1200),
        "reported": 990,
        "failed": 10,
        "ttc_p50": 10.0,
        "ttc_p90": 30.0,
        "ttc": list(hist(b0=600, b1=300, b3=100)),
        "declining": True,
    }
    assert (us["ttc_p50"], us["ttc_p90"], us["declining"]) == (60.0, None, False)  # past a day
    assert (us_today["conversion"], us_today["ttc_p50"], us_today["ttc_p90"]) == (0.0, None, None)
    assert data["total"]["sent"] == 1213
    assert "day" not in data["total"]
    assert data["declining"] == {
        "margin": 0.1,
        "min_sent": 50,
        "recent_days": 7,
        "baseline_days": 30,
        "countries": [
            {
                "country": "FR",
                "recent": pytest.approx(1000 / 1200),
                "baseline": pytest.approx(0.96),
                "drop": pytest.approx(0.96 - 1000 / 1200),
                "recent_sent": 1200,
                "recent_confirmed": 1000,
                "baseline_sent": 5000,
                "baseline_confirmed": 4800,
            }
        ],
    }
    stamped = report.Report(small().insights, generated_at=made)
    assert json.loads(report.to_json(stamped))["generated_at"] == "2026-11-15T12:00:00+00:00"


def test_csv_has_a_header_row_and_one_line_per_row() -> None:
    text = report.to_csv(small())
    lines = text.splitlines()
    assert lines[0] == (
        "day,country,sent,confirmed,conversion,reported,failed,ttc_p50,ttc_p90,"
        "ttc_le_10,ttc_le_30,ttc_le_60,ttc_le_120,ttc_le_300,ttc_le_600,ttc_le_1800,"
        "ttc_le_3600,ttc_le_21600,ttc_le_86400,ttc_gt_86400,declining"
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 3
    fr, us, us_today = rows
    assert (fr["day"], fr["country"], fr["sent"], fr["confirmed"]) == (
        "2026-11-14",
        "FR",
        "1200",
        "1000",
    )
    assert float(fr["conversion"]) == pytest.approx(1000 / 1200)
    assert (fr["ttc_p50"], fr["ttc_p90"], fr["ttc_le_10"], fr["declining"]) == (
        "10",
        "30",
        "600",
        "yes",
    )
    assert (us["ttc_p90"], us["ttc_gt_86400"], us["declining"]) == ("", "4", "")
    assert (us_today["conversion"], us_today["ttc_p50"]) == ("0.0", "")


def test_csv_by_sender_only() -> None:
    insights = insights_data.insights(("sender",))
    text = report.to_csv(report.build(insights))
    assert text.splitlines()[0].startswith("sender,sent,")
    assert [r["sender"] for r in csv.DictReader(io.StringIO(text))] == sorted(insights_data.SENDERS)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def having(self, tag: str, css_class: str) -> list[dict[str, str | None]]:
        return [
            attrs
            for name, attrs in self.tags
            if name == tag and css_class in (attrs.get("class") or "").split()
        ]


def parsed(html: str) -> Elements:
    elements = Elements()
    elements.feed(html)
    elements.close()
    return elements


def test_the_html_page_stands_alone() -> None:
    built = report.collect(insights_data.Source(), since=day(29), until=UNTIL)
    html = report.to_html(built)
    page = parsed(html)
    names = {name for name, _ in page.tags}
    assert "script" not in names
    assert not names & {"link", "img", "iframe", "object", "embed"}
    assert not re.search(r"(?i)(https?:|//[a-z]|url\()", html), "something would be fetched"
    csp = [
        a for n, a in page.tags if n == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp[0]["content"] == "default-src 'none'; style-src 'unsafe-inline'"
    # The charts: the five countries with the most messages (FR, declining, among them).
    (chart,) = page.having("svg", "conversion")
    assert chart["data-series"] == "5"
    series = page.having("g", "series")
    assert [s["data-country"] for s in series] == ["US", "GB", "FR", "DE", "BR"]
    assert page.having("g", "declining") == [{"class": "series declining", "data-country": "FR"}]
    assert len(page.having("rect", "bar")) == len(TTC_BUCKETS)
    legend = [a["data-country"] for n, a in page.tags if n == "li" and "data-country" in a]
    assert legend == ["US", "GB", "FR", "DE", "BR"]
    text = "".join(page.text)
    assert "FR: 57.6% in the last 7 days" in text
    # The table: one row per day and country, and a total.
    assert len([n for n, _ in page.tags if n == "tr"]) == 1 + 30 * 7 + 1


def test_the_html_chart_adds_declining_countries_past_the_top() -> None:
    built = report.collect(insights_data.Source(), since=day(29), until=UNTIL)
    page = parsed(report.to_html(built, top=2))
    assert [s["data-country"] for s in page.having("g", "series")] == ["US", "GB", "FR"]


def test_the_html_page_escapes_what_it_shows() -> None:
    nasty = '<script>alert("x")</script>'
    rows = [InsightRow(day(0), "FR", nasty, 10, 5, 5, 0, hist(b0=5))]
    insights = Insights(rows, day(0), UNTIL, ("day", "country", "sender"), note=nasty)
    html = report.to_html(report.build(insights))
    assert "<script" not in html
    assert "&lt;script&gt;" in html


def test_the_html_page_of_nothing() -> None:
    empty = report.build(Insights([], day(29), UNTIL, ("day", "country")))
    page = parsed(report.to_html(empty))
    assert page.having("svg", "conversion")[0]["data-series"] == "0"
    assert "No messages sent in this period" in "".join(page.text)
    unavailable = Insights(
        [], day(29), UNTIL, ("day",), available=False, note="This store keeps no insights."
    )
    page = parsed(report.to_html(report.Report(unavailable)))
    assert not page.having("svg", "chart")
    assert "This store keeps no insights." in "".join(page.text)


def test_the_html_chart_of_a_table_without_daily_figures_says_why_it_is_empty() -> None:
    built = report.build(insights_data.insights(("sender",)))
    page = parsed(report.to_html(built))
    assert page.having("svg", "conversion")[0]["data-series"] == "0"
    text = "".join(page.text)
    assert "No daily figures per country in this report" in text
    assert "No messages sent" not in text


def test_a_note_on_available_insights_is_shown() -> None:
    """tracker.insights() notes that counting is off (Settings.insights=False)."""
    note = "insights are off: new messages are not counted"
    insights = Insights([], day(29), UNTIL, ("day", "country"), note=note)
    built = report.build(insights)
    assert report.to_text(built).splitlines()[1] == f"Note: {note}"
    assert note in "".join(parsed(report.to_html(built)).text)
    assert json.loads(report.to_json(built))["note"] == note
