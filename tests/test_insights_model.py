"""The insights data model: buckets, percentiles, grouping."""

from __future__ import annotations

import math
from datetime import date

import pytest

from twilio_feedback.insights import (
    MAX_SENDER_LENGTH,
    TTC_BUCKETS,
    Cell,
    cell_from_counts,
    check_country,
    check_sender,
    country_of,
    day_number,
    summarize,
    ttc_bucket,
    ttc_percentile,
)

D1, D2 = date(2026, 11, 1), date(2026, 11, 2)


def hist(**counts: int) -> tuple[int, ...]:
    values = [0] * len(TTC_BUCKETS)
    for name, count in counts.items():
        values[int(name[1:])] = count
    return tuple(values)


@pytest.mark.parametrize(
    ("seconds", "index"),
    [(-3, 0), (0, 0), (10, 0), (10.001, 1), (30, 1), (59, 2), (86400, 9), (86401, 10), (1e12, 10)],
)
def test_buckets(seconds: float, index: int) -> None:
    assert ttc_bucket(seconds) == index


def test_percentiles_are_bucket_bounds() -> None:
    histogram = hist(b0=5, b2=4, b10=1)
    assert ttc_percentile(histogram, 0.5) == 10.0
    assert ttc_percentile(histogram, 0.9) == 60.0
    assert ttc_percentile(histogram, 1.0) == math.inf
    assert ttc_percentile(hist(), 0.5) is None


def test_summarize_groups_and_sums() -> None:
    cells = [
        Cell(D1, "US", "+1500", sent=10, confirmed=6, reported=5, failed=1, ttc=hist(b0=6)),
        Cell(D1, "FR", "+1500", sent=4, confirmed=1, ttc=hist(b3=1)),
        Cell(D2, "US", "MG1", sent=6, confirmed=3, reported=3, ttc=hist(b1=3)),
    ]
    by_country = summarize(cells, ["country"])
    assert [(r.country, r.day, r.sender, r.sent, r.confirmed) for r in by_country] == [
        ("FR", None, None, 4, 1),
        ("US", None, None, 16, 9),
    ]
    us = by_country[1]
    assert us.conversion == pytest.approx(9 / 16)
    assert us.ttc == hist(b0=6, b1=3)
    assert (us.ttc_p50, us.ttc_p90) == (10.0, 30.0)
    by_day_sender = summarize(cells, ["day", "sender"])
    assert [(r.day, r.sender, r.sent) for r in by_day_sender] == [
        (D1, "+1500", 14),
        (D2, "MG1", 6),
    ]
    total = summarize(cells, [])
    assert len(total) == 1
    assert (total[0].sent, total[0].reported, total[0].failed) == (20, 8, 1)
    assert summarize([], ["day"]) == []
    with pytest.raises(ValueError, match="cannot group by 'week'"):
        summarize(cells, ["week"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("number", "country"),
    [
        ("+14155550100", "US"),
        ("+12505550199", "CA"),  # +1 is shared: the area code tells
        ("+447700900123", "GB"),
        ("+33612345678", "FR"),
        ("+919876543210", "IN"),
        ("whatsapp:+5511987654321", "BR"),  # a channel address is read by its number
        ("+999123456", "XX"),  # no such calling code
        ("14155550100", "XX"),  # not E.164
        ("12345", "XX"),  # a short code
        ("", "XX"),
        (None, "XX"),
        ("+1 (415) 555-0100", "US"),
    ],
)
def test_country_of(number: str | None, country: str) -> None:
    assert country_of(number) == country


def test_check_country_and_sender() -> None:
    assert check_country("US") == "US"
    assert check_country("XX") == "XX"
    for bad in ("us", "USA", "U", "", "1A"):
        with pytest.raises(ValueError, match="ISO 3166 alpha-2"):
            check_country(bad)
    assert check_sender("+15005550006") == "+15005550006"
    assert check_sender("x" * MAX_SENDER_LENGTH)
    for bad in ("", "x" * (MAX_SENDER_LENGTH + 1)):
        with pytest.raises(ValueError, match="sender must be"):
            check_sender(bad)


def test_day_number_is_the_utc_day() -> None:
    midnight = (D2 - date(1970, 1, 1)).days * 86400
    assert day_number(midnight) == day_number(midnight + 86399.999)
    assert day_number(midnight - 0.001) == day_number(midnight) - 1
    counts = [5, 3, 2, 1, *range(len(TTC_BUCKETS))]
    cell = cell_from_counts(day_number(midnight), "US", "s", counts)
    assert cell == Cell(D2, "US", "s", 5, 3, 2, 1, tuple(range(len(TTC_BUCKETS))))
