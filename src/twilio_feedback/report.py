"""Conversion insights, rendered: a terminal table, JSON, CSV, and one self-contained HTML page.

Everything here is pure: an :class:`~twilio_feedback.insights.Insights` (what
``tracker.insights()`` returns) goes in, text comes out. :func:`declining` flags the
countries whose conversion in the last 7 days fell below their previous 30 days by more than
a margin; :class:`Report` holds the rows, the daily figures per country the chart and the
flags are drawn from, and the flags, and every format shows them.

The HTML page needs no network and runs no script: its styles are inline and its charts are
SVG drawn here, in Python (a ``Content-Security-Policy`` forbids loading anything). It opens
from a file, an e-mail attachment or a CI artifact alike, prints, and reads the same with
JavaScript off.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from html import escape
from typing import Any, Protocol

from .insights import TTC_BUCKETS, Cell, Group, InsightRow, Insights, summarize

__all__ = [
    "BASELINE_DAYS",
    "DEFAULT_MARGIN",
    "DEFAULT_MIN_SENT",
    "PALETTE",
    "RECENT_DAYS",
    "TOP_COUNTRIES",
    "Decline",
    "InsightsSource",
    "Report",
    "add_up",
    "build",
    "collect",
    "declining",
    "duration",
    "flag_since",
    "to_csv",
    "to_dict",
    "to_html",
    "to_json",
    "to_text",
    "within_bound",
]

DEFAULT_MARGIN = 0.10
"""How far (as a share: 0.10 is 10 percentage points) a country's conversion over the last
:data:`RECENT_DAYS` days may fall below its previous :data:`BASELINE_DAYS` days before it is
flagged."""
DEFAULT_MIN_SENT = 50
"""Messages a country needs in each of the two periods to be judged at all: below that, a
few unlucky messages would flag it."""
RECENT_DAYS = 7
"""The recent period of :func:`declining`, in days, ending on the report's last day."""
BASELINE_DAYS = 30
"""The period before it that :func:`declining` compares with, in days."""
TOP_COUNTRIES = 5
"""Countries the HTML chart draws (those with the most messages), besides flagged ones."""


# -- the flags ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decline:
    """A country whose conversion fell: its counts in the recent and the baseline period."""

    country: str
    recent_sent: int
    recent_confirmed: int
    baseline_sent: int
    baseline_confirmed: int

    @property
    def recent(self) -> float:
        """Conversion over the recent period (0.0 to 1.0)."""
        return self.recent_confirmed / self.recent_sent

    @property
    def baseline(self) -> float:
        """Conversion over the baseline period (0.0 to 1.0)."""
        return self.baseline_confirmed / self.baseline_sent

    @property
    def drop(self) -> float:
        """How far conversion fell, as a share (0.2 is 20 percentage points)."""
        return self.baseline - self.recent


def declining(
    rows: Iterable[InsightRow],
    until: date,
    *,
    margin: float = DEFAULT_MARGIN,
    min_sent: int = DEFAULT_MIN_SENT,
    recent_days: int = RECENT_DAYS,
    baseline_days: int = BASELINE_DAYS,
) -> list[Decline]:
    """The countries whose conversion over the ``recent_days`` days ending on ``until`` is
    lower than over the ``baseline_days`` days before them by more than ``margin`` (a share:
    0.1 is 10 percentage points), biggest drop first.

    ``rows`` are grouped by day and country (other rows are refused); days outside the two
    periods are ignored. A country with fewer than ``min_sent`` messages in either period
    is never flagged.
    """
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be at least 0 and below 1, not {margin!r}")
    if min_sent < 1 or recent_days < 1 or baseline_days < 1:
        raise ValueError("min_sent, recent_days and baseline_days must be at least 1")
    recent_start = until - timedelta(days=recent_days - 1)
    baseline_start = recent_start - timedelta(days=baseline_days)
    counts: dict[str, list[int]] = {}
    for row in rows:
        if row.day is None or row.country is None:
            raise ValueError("declining() needs rows grouped by day and country")
        if recent_start <= row.day <= until:
            offset = 0
        elif baseline_start <= row.day < recent_start:
            offset = 2
        else:
            continue
        country = counts.setdefault(row.country, [0, 0, 0, 0])
        country[offset] += row.sent
        country[offset + 1] += row.confirmed
    flags = [
        Decline(name, *figures)
        for name, figures in counts.items()
        if figures[0] >= min_sent and figures[2] >= min_sent
    ]
    # Rounded: a drop of exactly the margin (0.8 - 0.7) is not more than it.
    flags = [flag for flag in flags if round(flag.drop, 9) > margin]
    flags.sort(key=lambda flag: (-flag.drop, flag.country))
    return flags


def flag_since(until: date) -> date:
    """The first day :func:`declining` looks at for a report ending on ``until``."""
    return until - timedelta(days=RECENT_DAYS + BASELINE_DAYS - 1)


# -- the report ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    """What the renderers show: the ``insights`` (the table's rows), the figures per day
    and country from the same period (``daily``: the chart), the ``declines`` found with
    ``margin`` and ``min_sent``, and when it was made (shown when given)."""

    insights: Insights
    daily: list[InsightRow] = field(default_factory=list)
    declines: list[Decline] = field(default_factory=list)
    margin: float = DEFAULT_MARGIN
    min_sent: int = DEFAULT_MIN_SENT
    generated_at: datetime | None = None

    @property
    def total(self) -> InsightRow:
        """Every row added up."""
        return add_up(self.insights.rows)

    @property
    def declining_countries(self) -> set[str]:
        """The flagged countries' codes."""
        return {flag.country for flag in self.declines}


def add_up(rows: Iterable[InsightRow]) -> InsightRow:
    """``rows`` added up into one row (no dimension)."""
    sent = confirmed = reported = failed = 0
    histogram = [0] * len(TTC_BUCKETS)
    for row in rows:
        sent += row.sent
        confirmed += row.confirmed
        reported += row.reported
        failed += row.failed
        for index, count in enumerate(row.ttc):
            histogram[index] += count
    return InsightRow(None, None, None, sent, confirmed, reported, failed, tuple(histogram))


def build(
    insights: Insights,
    daily: Insights | None = None,
    *,
    margin: float = DEFAULT_MARGIN,
    min_sent: int = DEFAULT_MIN_SENT,
    generated_at: datetime | None = None,
) -> Report:
    """A :class:`Report` of ``insights``, with its chart and flags from ``daily``: insights
    grouped by day and country that end on the same day and start at least
    :data:`RECENT_DAYS` + :data:`BASELINE_DAYS` days earlier, for the flags to see a whole
    baseline (:func:`collect` asks for them). Without ``daily``, ``insights`` themselves,
    grouped by day and country, serve."""
    source = daily if daily is not None else insights
    if "day" not in source.by or "country" not in source.by:
        if daily is not None:
            raise ValueError("daily insights must be grouped by day and country")
        rows: list[InsightRow] = []
        flags: list[Decline] = []
    else:
        by_day_country = _regroup(source.rows)
        rows = [row for row in by_day_country if _within(row.day, insights)]
        flags = declining(by_day_country, insights.until, margin=margin, min_sent=min_sent)
    return Report(insights, rows, flags, margin, min_sent, generated_at)


def _within(day: date | None, insights: Insights) -> bool:
    return day is not None and insights.since <= day <= insights.until


def _regroup(rows: Iterable[InsightRow]) -> list[InsightRow]:
    """Rows grouped by day and country (and maybe sender) as rows by day and country."""
    cells = [
        Cell(row.day, row.country, "", row.sent, row.confirmed, row.reported, row.failed, row.ttc)
        for row in rows
        if row.day is not None and row.country is not None
    ]
    return summarize(cells, ("day", "country"))


class InsightsSource(Protocol):
    """What :func:`collect` reads: a :class:`~twilio_feedback.FeedbackTracker`."""

    def insights(
        self,
        since: date | None = None,
        until: date | None = None,
        by: Sequence[Group] = ("day", "country"),
    ) -> Insights:
        """Rows for the days ``since`` to ``until``, grouped ``by``."""
        ...


def collect(
    source: InsightsSource,
    *,
    since: date,
    until: date,
    by: Sequence[Group] = ("day", "country"),
    margin: float = DEFAULT_MARGIN,
    min_sent: int = DEFAULT_MIN_SENT,
    generated_at: datetime | None = None,
) -> Report:
    """Ask ``source`` (a tracker) for the insights of ``since`` to ``until`` grouped
    ``by``, and for the daily figures per country the chart and the flags need (one
    question when ``by`` is day and country over a long enough period), and :func:`build`
    the report."""
    by = tuple(by)
    table = source.insights(since=since, until=until, by=by)
    if not table.available:
        return Report(table, margin=margin, min_sent=min_sent, generated_at=generated_at)
    first = min(since, flag_since(until))
    if set(by) == {"day", "country"} and since <= first:
        daily = table
    else:
        daily = source.insights(since=first, until=until, by=("day", "country"))
    return build(table, daily, margin=margin, min_sent=min_sent, generated_at=generated_at)


# -- numbers as people read them -------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def duration(seconds: float | None) -> str:
    """A time to confirm as people read it: ``30 s``, ``2 min``, ``6 h``, ``1 day``,
    ``> 1 day`` past the last bucket, ``-`` when unknown."""
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return f"> {duration(TTC_BUCKETS[-2])}"
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    if seconds < 86400:
        return f"{seconds / 3600:g} h"
    days = seconds / 86400
    return f"{days:g} day{'s' * (days != 1)}"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _count(value: int) -> str:
    return f"{value:,}"


def _bucket_labels() -> list[str]:
    return [
        f"> {duration(TTC_BUCKETS[-2])}" if math.isinf(bound) else f"≤ {duration(bound)}"
        for bound in TTC_BUCKETS
    ]


def _period(insights: Insights) -> str:
    return f"{insights.since.isoformat()} to {insights.until.isoformat()} (UTC)"


def _flag_rule(report: Report) -> str:
    return (
        f"last {RECENT_DAYS} days against the previous {BASELINE_DAYS}, "
        f"margin {report.margin * 100:g} points, "
        f"at least {_count(report.min_sent)} messages in each"
    )


def _flag_line(flag: Decline) -> str:
    return (
        f"{flag.country}: {_percent(flag.recent)} in the last {RECENT_DAYS} days "
        f"({_count(flag.recent_sent)} sent) against {_percent(flag.baseline)} in the "
        f"previous {BASELINE_DAYS} ({_count(flag.baseline_sent)} sent): "
        f"down {flag.drop * 100:.1f} points"
    )


def _group_value(row: InsightRow, name: Group) -> str:
    value = getattr(row, name)
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, date) else str(value)


def _is_declining(report: Report, row: InsightRow) -> bool:
    return row.country is not None and row.country in report.declining_countries


# -- text ---------------------------------------------------------------------------------

_COLUMNS = ("sent", "confirmed", "conversion", "reported", "failed", "ttc p50", "ttc p90")


def _figures(row: InsightRow) -> list[str]:
    return [
        _count(row.sent),
        _count(row.confirmed),
        _percent(row.conversion),
        _count(row.reported),
        _count(row.failed),
        duration(row.ttc_p50),
        duration(row.ttc_p90),
    ]


def to_text(report: Report) -> str:
    """The report as a terminal table: one line per row, a total, then the flags."""
    insights = report.insights
    lines = [f"Conversion insights, {_period(insights)}"]
    if not insights.available:
        lines.append(insights.note or "the store keeps no insights")
        return "\n".join(lines) + "\n"
    if insights.note:
        lines.append(f"Note: {insights.note}")
    groups = list(insights.by)
    marks = bool(report.declines) and "country" in groups
    header = [*groups, *_COLUMNS] + (["flag"] if marks else [])
    table = [
        [_group_value(row, name) for name in groups]
        + _figures(row)
        + (["declining" if _is_declining(report, row) else ""] if marks else [])
        for row in insights.rows
    ]
    if groups and len(table) > 1:
        table.append(["total", *[""] * (len(groups) - 1), *_figures(report.total)])
        table[-1] += [""] * (len(header) - len(table[-1]))
    widths = [max(len(cells[i]) for cells in (header, *table)) for i in range(len(header))]
    numeric = range(len(groups), len(groups) + len(_COLUMNS))

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()

    lines += ["", line(header)]
    if groups and len(table) > 1:
        lines.extend(line(cells) for cells in table[:-1])
        lines.append(line(["-" * width for width in widths]))
        lines.append(line(table[-1]))
    else:
        lines.extend(line(cells) for cells in table)
    if not table:
        lines.append("no messages sent in this period")
    lines.append("")
    lines.append("ttc: time from send to confirmation, the upper bound of its bucket")
    lines.append("")
    lines.append(f"Declining countries ({_flag_rule(report)}):")
    if report.declines:
        lines.extend(f"  {_flag_line(flag)}" for flag in report.declines)
    else:
        lines.append("  none")
    return "\n".join(lines) + "\n"


# -- JSON and CSV ---------------------------------------------------------------------------


def _seconds(value: float | None) -> float | None:
    # JSON has no infinity: a percentile in the open last bucket is unknown past one day.
    return None if value is None or math.isinf(value) else value


def _row_dict(row: InsightRow, groups: Sequence[Group]) -> dict[str, Any]:
    data: dict[str, Any] = {name: _group_value(row, name) or None for name in groups}
    data.update(
        sent=row.sent,
        confirmed=row.confirmed,
        conversion=row.conversion,
        reported=row.reported,
        failed=row.failed,
        ttc_p50=_seconds(row.ttc_p50),
        ttc_p90=_seconds(row.ttc_p90),
        ttc=list(row.ttc),
    )
    return data


def to_dict(report: Report) -> dict[str, Any]:
    """The report as plain data (what :func:`to_json` writes): dates as ISO strings,
    numbers as numbers, ``None`` where a figure is unknown. ``ttc_p50`` and ``ttc_p90`` are
    seconds (a bucket's upper bound), ``None`` without confirmations or past the last
    finite bound; ``ttc`` counts confirmations per bucket of ``ttc_buckets`` (upper bounds
    in seconds, ``None`` for the last, open one)."""
    insights = report.insights
    groups = list(insights.by)
    data: dict[str, Any] = {
        "since": insights.since.isoformat(),
        "until": insights.until.isoformat(),
        "by": groups,
        "available": insights.available,
        "note": insights.note,
        "ttc_buckets": [_seconds(bound) for bound in TTC_BUCKETS],
        "rows": [
            {**_row_dict(row, groups), "declining": _is_declining(report, row)}
            for row in insights.rows
        ],
        "total": _row_dict(report.total, []),
        "declining": {
            "margin": report.margin,
            "min_sent": report.min_sent,
            "recent_days": RECENT_DAYS,
            "baseline_days": BASELINE_DAYS,
            "countries": [
                {
                    "country": flag.country,
                    "recent": flag.recent,
                    "baseline": flag.baseline,
                    "drop": flag.drop,
                    "recent_sent": flag.recent_sent,
                    "recent_confirmed": flag.recent_confirmed,
                    "baseline_sent": flag.baseline_sent,
                    "baseline_confirmed": flag.baseline_confirmed,
                }
                for flag in report.declines
            ],
        },
    }
    if report.generated_at is not None:
        data["generated_at"] = report.generated_at.isoformat()
    return data


def to_json(report: Report) -> str:
    """The report as JSON (:func:`to_dict`), indented, ending with a newline."""
    return json.dumps(to_dict(report), indent=2, allow_nan=False) + "\n"


def _bucket_columns() -> list[str]:
    return [
        f"ttc_gt_{TTC_BUCKETS[-2]:g}" if math.isinf(bound) else f"ttc_le_{bound:g}"
        for bound in TTC_BUCKETS
    ]


def to_csv(report: Report) -> str:
    """The rows as CSV with a header row: the grouping columns, the counts, ``conversion``
    (a share), ``ttc_p50`` and ``ttc_p90`` in seconds (empty when unknown), confirmations
    per time-to-confirm bucket (``ttc_le_10`` ... ``ttc_gt_86400``), and ``declining``
    (``yes`` on the rows of a flagged country)."""
    groups = list(report.insights.by)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            *groups,
            "sent",
            "confirmed",
            "conversion",
            "reported",
            "failed",
            "ttc_p50",
            "ttc_p90",
            *_bucket_columns(),
            "declining",
        ]
    )
    for row in report.insights.rows:
        data = _row_dict(row, groups)
        writer.writerow(
            [
                *(data[name] or "" for name in groups),
                row.sent,
                row.confirmed,
                "" if row.conversion is None else repr(row.conversion),
                row.reported,
                row.failed,
                *("" if data[name] is None else f"{data[name]:g}" for name in _TTC_KEYS),
                *row.ttc,
                "yes" if _is_declining(report, row) else "",
            ]
        )
    return out.getvalue()


_TTC_KEYS = ("ttc_p50", "ttc_p90")


# -- HTML -----------------------------------------------------------------------------------

PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#8c6d1f")
"""Series colours (Okabe and Ito's, told apart with any colour vision), in order."""

_CSS = """
:root { --fg: #1f2328; --muted: #656d76; --bg: #fff; --line: #d0d7de; --grid: #eaeef2;
  --warn: #b35900; --warn-bg: #fff4e5; color-scheme: light dark; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --line: #3d444d; --grid: #262c36;
    --warn: #f0a35e; --warn-bg: #2b1d0e; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.15em; margin: 32px 0 8px; }
p { margin: 6px 0; }
.muted { color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 18px 0 0; padding: 0;
  list-style: none; }
.cards li { border: 1px solid var(--line); border-radius: 8px; padding: 8px 14px;
  min-width: 120px; }
.cards b { display: block; font-size: 1.35em; font-variant-numeric: tabular-nums; }
.flags { border-left: 4px solid var(--warn); background: var(--warn-bg); padding: 8px 14px;
  border-radius: 4px; }
.flags ul { margin: 4px 0; padding-left: 20px; }
.ok { border-left: 4px solid var(--line); padding: 8px 14px; }
figure { margin: 0; }
svg.chart { display: block; width: 100%; height: auto; font-size: 12px; }
svg.chart text { fill: var(--muted); }
svg.chart .grid { stroke: var(--grid); }
svg.chart .recent { fill: var(--grid); opacity: 0.6; }
svg.chart .axis { stroke: var(--line); }
svg.chart .series path { fill: none; stroke-width: 2.2; stroke-linejoin: round; }
svg.chart .series.declining path { stroke-dasharray: 6 4; }
svg.chart .bar { fill: #0072b2; }
svg.chart text.value { fill: var(--fg); }
.legend { display: flex; flex-wrap: wrap; gap: 6px 18px; list-style: none; padding: 0;
  margin: 6px 0 0; }
.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 18px; height: 4px; border-radius: 2px; }
.legend .declining { color: var(--warn); font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--grid); text-align: left;
  white-space: nowrap; }
th { border-bottom: 1px solid var(--line); font-weight: 600; }
td.num, th.num { text-align: right; }
tr.declining td { color: var(--warn); }
tfoot td { font-weight: 600; border-top: 1px solid var(--line); }
.scroll { overflow-x: auto; }
"""


def within_bound(seconds: float | None) -> str:
    """A time-to-confirm bucket's upper bound as the report prints it: ``≤ 2 min``,
    ``> 1 day`` for the last bucket, ``-`` when unknown."""
    if seconds is None or math.isinf(seconds):
        return duration(seconds)
    return f"≤ {duration(seconds)}"


def _day_label(day: date) -> str:
    return f"{_MONTHS[day.month - 1]} {day.day}"


def _top_countries(report: Report, top: int) -> list[str]:
    sent: dict[str, int] = {}
    for row in report.daily:
        if row.country is not None:
            sent[row.country] = sent.get(row.country, 0) + row.sent
    ranked = sorted((country for country in sent if sent[country]), key=lambda c: (-sent[c], c))
    chosen = ranked[:top]
    chosen += [flag.country for flag in report.declines if flag.country not in chosen]
    return chosen


def _conversion_chart(report: Report, top: int) -> str:
    insights = report.insights
    days = [
        insights.since + timedelta(days=n)
        for n in range((insights.until - insights.since).days + 1)
    ]
    countries = _top_countries(report, top)
    width, height = 760, 300
    left, right, top_pad, bottom = 48, 16, 14, 34
    plot_w, plot_h = width - left - right, height - top_pad - bottom

    def x(index: int) -> float:
        if len(days) == 1:
            return left + plot_w / 2
        return left + plot_w * index / (len(days) - 1)

    def y(rate: float) -> float:
        return top_pad + plot_h * (1.0 - rate)

    parts = [
        f'<svg class="chart conversion" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="conversion-title" data-series="{len(countries)}">'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text x="{left - 8}" y="{ty + 4:.1f}" text-anchor="end">{tick * 100:g}%</text>'
        )
    parts.append(
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{y(0.0):.1f}" y2="{y(0.0):.1f}"/>'
    )
    recent = next(
        (n for n, day in enumerate(days) if day > insights.until - timedelta(days=RECENT_DAYS)), 0
    )
    if recent > 0:
        start = (x(recent - 1) + x(recent)) / 2
        parts.append(
            f'<rect class="recent" x="{start:.1f}" y="{top_pad}" '
            f'width="{width - right - start:.1f}" height="{plot_h}"/>'
            f'<text x="{width - right - 4}" y="{top_pad + 14}" text-anchor="end">'
            f"last {RECENT_DAYS} days</text>"
        )
    step = max(1, math.ceil(len(days) / 8))
    for index in range(0, len(days), step):
        parts.append(
            f'<text x="{x(index):.1f}" y="{height - 12}" text-anchor="middle">'
            f"{_day_label(days[index])}</text>"
        )
    if not countries:
        empty = (
            "No daily figures per country in this report"
            if report.total.sent
            else "No messages sent in this period"
        )
        parts.append(
            f'<text class="empty" x="{left + plot_w / 2:.1f}" y="{top_pad + plot_h / 2:.1f}" '
            f'text-anchor="middle">{empty}</text>'
        )
    figures = {(row.day, row.country): row for row in report.daily}
    for number, country in enumerate(countries):
        colour = PALETTE[number % len(PALETTE)]
        flagged = country in report.declining_countries
        path: list[str] = []
        points: list[str] = []
        drawing = False
        for index, day in enumerate(days):
            row = figures.get((day, country))
            if row is None or row.conversion is None:
                drawing = False
                continue
            px, py = x(index), y(row.conversion)
            path.append(f"{'L' if drawing else 'M'}{px:.1f},{py:.1f}")
            drawing = True
            points.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colour}"><title>'
                f"{escape(country)} {day.isoformat()}: {_percent(row.conversion)} "
                f"({_count(row.confirmed)} of {_count(row.sent)})</title></circle>"
            )
        parts.append(
            f'<g class="series{" declining" if flagged else ""}" '
            f'data-country="{escape(country)}">'
            f'<path d="{" ".join(path)}" stroke="{colour}"/>{"".join(points)}</g>'
        )
    parts.append("</svg>")
    legend = ['<ul class="legend">']
    totals = {country: [0, 0] for country in countries}
    for row in report.daily:
        if row.country in totals:
            totals[row.country][0] += row.sent
            totals[row.country][1] += row.confirmed
    for number, country in enumerate(countries):
        sent, confirmed = totals[country]
        flagged = country in report.declining_countries
        legend.append(
            f'<li data-country="{escape(country)}"{" class=declining" if flagged else ""}>'
            f'<span class="swatch" style="background:{PALETTE[number % len(PALETTE)]}"></span>'
            f"{escape(country)} {_percent(confirmed / sent if sent else None)} "
            f'<span class="muted">({_count(sent)} sent)</span>'
            f"{' ▼ declining' if flagged else ''}</li>"
        )
    legend.append("</ul>")
    return "".join(parts) + "".join(legend)


def _ttc_chart(total: InsightRow) -> str:
    width, height = 760, 240
    left, right, top_pad, bottom = 16, 16, 22, 34
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    band = plot_w / len(TTC_BUCKETS)
    biggest = max(total.ttc, default=0) or 1
    confirmed = sum(total.ttc)
    parts = [
        f'<svg class="chart ttc" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="ttc-title" data-bars="{len(TTC_BUCKETS)}">',
        f'<line class="axis" x1="{left}" x2="{width - right}" y1="{top_pad + plot_h}" '
        f'y2="{top_pad + plot_h}"/>',
    ]
    for index, (label, count) in enumerate(zip(_bucket_labels(), total.ttc, strict=True)):
        bar_h = plot_h * count / biggest
        bx = left + band * index + band * 0.15
        by = top_pad + plot_h - bar_h
        share = _percent(count / confirmed) if confirmed else "-"
        parts.append(
            f'<rect class="bar" x="{bx:.1f}" y="{by:.1f}" width="{band * 0.7:.1f}" '
            f'height="{bar_h:.1f}" data-count="{count}"><title>{escape(label)}: '
            f"{_count(count)} confirmations ({share})</title></rect>"
        )
        if count:
            parts.append(
                f'<text class="value" x="{bx + band * 0.35:.1f}" y="{by - 5:.1f}" '
                f'text-anchor="middle">{_count(count)}</text>'
            )
        parts.append(
            f'<text x="{bx + band * 0.35:.1f}" y="{height - 12}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(report: Report) -> str:
    insights = report.insights
    groups = list(insights.by)
    head = "".join(f"<th>{name}</th>" for name in groups) + "".join(
        f'<th class="num">{name}</th>' for name in _COLUMNS
    )
    rows = []
    for row in insights.rows:
        flagged = _is_declining(report, row)
        cells = "".join(f"<td>{escape(_group_value(row, name))}</td>" for name in groups)
        cells += "".join(f'<td class="num">{escape(value)}</td>' for value in _figures(row))
        rows.append(f"<tr{' class=declining' if flagged else ''}>{cells}</tr>")
    total = "".join(f"<td>{'total' if n == 0 else ''}</td>" for n in range(len(groups))) + "".join(
        f'<td class="num">{escape(value)}</td>' for value in _figures(report.total)
    )
    if not rows:
        rows.append(f'<tr><td colspan="{len(groups) + len(_COLUMNS)}">No messages sent.</td></tr>')
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody><tfoot><tr>{total}</tr></tfoot></table></div>"
    )


def to_html(report: Report, *, top: int = TOP_COUNTRIES) -> str:
    """The report as one self-contained HTML page: figures at a glance, the declining
    countries, conversion per day for the ``top`` countries with the most messages (and
    every flagged one), the time-to-confirm distribution, and the table. Inline CSS and
    SVG only: no script, nothing loaded from anywhere."""
    insights = report.insights
    total = report.total
    title = f"Conversion insights, {_period(insights)}"
    made = (
        f" Made {report.generated_at.strftime('%Y-%m-%d %H:%M')} UTC."
        if report.generated_at is not None
        else ""
    )
    body = [
        f"<h1>Conversion insights</h1><p class=muted>{escape(_period(insights))}, "
        f"grouped by {escape(', '.join(insights.by) or 'nothing')}.{escape(made)}</p>"
    ]
    if not insights.available:
        body.append(f"<p class=flags>{escape(insights.note or 'The store keeps no insights.')}</p>")
    else:
        if insights.note:
            body.append(f"<p class=flags>{escape(insights.note)}</p>")
        cards = [
            ("sent", _count(total.sent)),
            ("confirmed", _count(total.confirmed)),
            ("conversion", _percent(total.conversion)),
            ("half confirmed within", within_bound(total.ttc_p50)),
            ("90% confirmed within", within_bound(total.ttc_p90)),
        ]
        body.append(
            '<ul class="cards">'
            + "".join(f"<li><b>{escape(v)}</b><span class=muted>{k}</span></li>" for k, v in cards)
            + "</ul>"
        )
        rule = escape(_flag_rule(report))
        if report.declines:
            items = "".join(f"<li>{escape(_flag_line(flag))}</li>" for flag in report.declines)
            body.append(
                f'<h2>Declining countries</h2><div class="flags" id="declining">'
                f"<ul>{items}</ul><p class=muted>{rule}.</p></div>"
            )
        else:
            body.append(
                f'<h2>Declining countries</h2><div class="ok" id="declining">'
                f"<p>None.</p><p class=muted>{rule}.</p></div>"
            )
        body.append(
            '<h2 id="conversion-title">Conversion rate per day</h2>'
            "<p class=muted>Share of each day's messages that were confirmed, for the "
            f"{top} countries with the most messages"
            f"{' and every declining one (dashed)' if report.declines else ''}.</p>"
            f"<figure>{_conversion_chart(report, top)}</figure>"
        )
        body.append(
            '<h2 id="ttc-title">Time to confirm</h2>'
            "<p class=muted>Confirmations by the time from send to confirmation; "
            f"half came within {escape(duration(total.ttc_p50))}, 90% within "
            f"{escape(duration(total.ttc_p90))}.</p>"
            f"<figure>{_ttc_chart(total)}</figure>"
        )
        body.append(f"<h2>Table</h2>{_html_table(report)}")
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Nothing may load: the page stands alone, wherever it is opened.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
