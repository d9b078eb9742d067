"""``twilio-feedback report``: the store's insights as a table, JSON, CSV and an HTML page.

A store registered here serves the 45-day dataset (tests/insights_data.py) through
``insight_cells(since, until)``, the query of the InsightsStore protocol, for the options
and the flags; a store without it gets a report that says so; and the known traffic of
tests/insights_traffic.py, played into every store that keeps insights, comes out with the
figures worked out by hand."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shlex
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from twilio_feedback import FeedbackTracker, Settings, report
from twilio_feedback.cli import main
from twilio_feedback.insights import Cell, summarize
from twilio_feedback.stores import InsightsStore, Store, base, register_store
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio

from . import insights_data
from .conftest import SECRET_KEY
from .insights_traffic import (
    BY_COUNTRY,
    BY_DAY_COUNTRY,
    BY_SENDER,
    TOTAL,
    play_past,
    play_today,
    today,
)
from .stores.test_conformance import make_store

pytestmark = pytest.mark.timeout(60)

UNTIL = insights_data.UNTIL
STORE = "insights-test://x"


class CellStore:
    """A memory store that also answers ``insight_cells`` from the dataset, ending on
    ``CellStore.until``; every question is kept in ``CellStore.asked``."""

    until = UNTIL
    asked: list[tuple[date, date]] = []

    def __init__(self, url: str) -> None:
        self.inner = MemoryStore()

    def insight_cells(self, since: date, until: date) -> list[Cell]:
        CellStore.asked.append((since, until))
        # More than asked for: the command keeps to its days.
        return insights_data.cells(until=CellStore.until)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class PlainStore(CellStore):
    """A store that keeps no insights."""

    insight_cells = None  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def stores(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TWILIO_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(CellStore, "asked", [])
    monkeypatch.setattr(CellStore, "until", UNTIL)
    register_store("insights-test", CellStore)
    register_store("plain-test", PlainStore)


def run(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> tuple[str, str]:
    assert main(["report", "--store", STORE, *args]) == code
    captured = capsys.readouterr()
    return captured.out, captured.err


def expected(since: date, by: tuple[str, ...] = ("day", "country")) -> list[Any]:
    cells = [cell for cell in insights_data.cells() if since <= cell.day <= UNTIL]
    return summarize(cells, by)  # type: ignore[arg-type]


def test_the_table_of_the_last_30_days(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = run(capsys, "--until", "2026-11-15")
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == "Conversion insights, 2026-10-17 to 2026-11-15 (UTC)"
    assert lines[2].split()[:3] == ["day", "country", "sent"]
    rows = expected(UNTIL - timedelta(days=29))
    body = lines[3 : 3 + len(rows)]
    assert len(rows) == 30 * 7
    for line, row in zip(body, rows, strict=True):
        fields = line.split()
        assert fields[:4] == [
            row.day.isoformat(),
            row.country,
            f"{row.sent:,}",
            f"{row.confirmed:,}",
        ]
        assert fields[-1] == "declining" if row.country == "FR" else fields[-1] != "declining"
    total = report.add_up(rows)
    assert lines[4 + len(rows)].split()[:3] == ["total", f"{total.sent:,}", f"{total.confirmed:,}"]
    assert "  FR: 57.6% in the last 7 days (891 sent) against 84.1% in the previous 30" in out
    # The table's 30 days, then the 37 the flags compare.
    assert CellStore.asked == [
        (UNTIL - timedelta(days=29), UNTIL),
        (UNTIL - timedelta(days=36), UNTIL),
    ]


def test_json_and_csv_carry_the_same_figures(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(capsys, "--until", "2026-11-15", "--since", "7d", "--by", "country", "--json")
    data = json.loads(out)
    assert (data["since"], data["until"], data["by"]) == ("2026-11-09", "2026-11-15", ["country"])
    rows = expected(UNTIL - timedelta(days=6), ("country",))
    assert [(r["country"], r["sent"], r["confirmed"], r["ttc"]) for r in data["rows"]] == [
        (row.country, row.sent, row.confirmed, list(row.ttc)) for row in rows
    ]
    assert [r["country"] for r in data["rows"] if r["declining"]] == ["FR"]
    assert data["declining"]["margin"] == 0.1
    assert datetime.fromisoformat(data["generated_at"]).tzinfo == timezone.utc

    out, _ = run(capsys, "--until", "2026-11-15", "--since", "7d", "--by", "country", "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert [(r["country"], int(r["sent"]), int(r["confirmed"])) for r in table] == [
        (row.country, row.sent, row.confirmed) for row in rows
    ]


def test_grouped_by_sender_between_two_dates(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(
        capsys, "--since", "2026-11-01", "--until", "2026-11-10", "--by", "sender,day", "--json"
    )
    data = json.loads(out)
    assert data["by"] == ["sender", "day"]
    assert len(data["rows"]) == 2 * 10
    assert data["rows"][0]["sender"] == sorted(insights_data.SENDERS)[0]
    assert data["rows"][0]["day"] == "2026-11-01"


def test_days_are_counted_back_from_today_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    today = datetime.now(timezone.utc).date()
    CellStore.until = today
    out, _ = run(capsys, "--json")
    data = json.loads(out)
    assert (data["since"], data["until"]) == (
        (today - timedelta(days=29)).isoformat(),
        today.isoformat(),
    )
    assert len(data["rows"]) == 30 * 7
    out, _ = run(capsys, "--until", "1d", "--since", "1d", "--json")
    yesterday = (today - timedelta(days=1)).isoformat()
    assert {row["day"] for row in json.loads(out)["rows"]} == {yesterday}


def test_the_margin_decides_the_flags(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(capsys, "--until", "2026-11-15", "--margin", "30", "--json")
    assert json.loads(out)["declining"]["countries"] == []
    out, _ = run(capsys, "--until", "2026-11-15", "--margin", "5%", "--min-sent", "1", "--json")
    flagged = json.loads(out)["declining"]
    assert (flagged["margin"], flagged["min_sent"]) == (0.05, 1)
    # XX sends one message a day: with min_sent 1 its fall counts too.
    assert [c["country"] for c in flagged["countries"]] == ["XX", "FR"]


def test_the_html_page_is_written_beside_the_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    out, err = run(capsys, "--until", "2026-11-15", "--html", str(page), "--top", "3")
    assert err == f"wrote {page}\n"
    assert out.startswith("Conversion insights, 2026-10-17 to 2026-11-15 (UTC)")
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert 'data-series="3"' in html
    assert html.count('<g class="series') == 3
    assert "FR: 57.6% in the last 7 days" in html


def test_a_store_without_insights_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["report", "--store", "plain-test://x"]) == 0
    out = capsys.readouterr().out
    assert (
        "the store (PlainStore) keeps no conversion insights: it does not implement InsightsStore"
        in out
    )
    assert main(["report", "--store", "plain-test://x", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["available"], data["rows"]) == (False, [])
    page = tmp_path / "none.html"
    assert main(["report", "--store", "plain-test://x", "--html", str(page)]) == 0
    assert "keeps no conversion insights" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last week"], "neither a date (YYYY-MM-DD) nor a number of days (30d)"),
        (["--since", "0d"], "must be at least 1d"),
        (
            ["--since", "2026-11-16", "--until", "2026-11-15"],
            "--since 2026-11-16 is after --until 2026-11-15",
        ),
        (["--by", "day,carrier"], "cannot group by 'carrier': use any of day,country,sender"),
        (["--by", "day,day"], "each of day, country, sender at most once"),
        (["--margin", "120"], "below 100 (percentage points)"),
        (["--json", "--csv"], "not allowed with argument"),
        (["--html", "/nonexistent/dir/report.html"], "cannot write /nonexistent/dir/report.html"),
    ],
)
def test_mistakes_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    try:
        code = main(["report", "--store", STORE, *args])
    except SystemExit as exited:  # argparse's own mistakes
        code = exited.code  # type: ignore[assignment]
    assert code == 2
    assert message in capsys.readouterr().err


DOCS = Path(__file__).resolve().parents[1] / "docs" / "insights.md"


def _blocks(language: str) -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_the_docs_show_what_the_command_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Conversion insights page's transcript, run on the dataset (its last day)."""
    (console,) = _blocks("console")
    command, *printed = console.splitlines()
    prog, name, *args = shlex.split(command.removeprefix("$ "))
    assert (prog, name) == ("twilio-feedback", "report")
    monkeypatch.setenv("TWILIO_FEEDBACK_STORE", STORE)
    assert main([name, *args, "--until", "2026-11-15"]) == 0
    assert capsys.readouterr().out.splitlines() == printed

    (row,) = _blocks("json")
    assert main([name, *args, "--until", "2026-11-15", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    shown = json.loads(row)
    assert shown == next(r for r in rows if r["country"] == shown["country"])


# -- a store's own counts, from known traffic --------------------------------------------------

STORES = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=STORES)
def traffic_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    cleanup: list[Any] = []
    store = make_store(request.param, request, cleanup)
    if not isinstance(store, InsightsStore):
        store.close()
        pytest.skip(f"{type(store).__name__} keeps no insights yet (InsightsStore)")
    yield store
    store.close()
    for close in cleanup:
        close()


def _seconds(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def test_known_traffic_through_the_command(
    traffic_store: Store, fake_twilio: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    known_traffic_through_the_command(traffic_store, fake_twilio, capsys)


def known_traffic_through_the_command(
    traffic_store: Store, fake_twilio: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    """tests/insights_traffic.py's four days, played into the store (past days) and through
    a tracker and FakeTwilio (today), come out of the table, --json and --csv with the
    figures worked out by hand; purging every record changes none of them. (The
    ``django://`` store runs it in tests/django/test_insights.py.)"""
    settings = Settings(
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        secret_key=SECRET_KEY,
        store=traffic_store,
        api_base_url=fake_twilio.base_url,
    )
    with FeedbackTracker(settings) as tracker:
        play_past(traffic_store, short_ttl=3600)
        play_today(tracker, fake_twilio)
    day = today()

    def report_of(*args: str) -> str:
        assert main(["report", "--since", "4d", *args], settings=settings) == 0
        return capsys.readouterr().out

    data = json.loads(report_of("--by", "country", "--json"))
    assert (data["since"], data["until"]) == (str(day - timedelta(days=3)), str(day))
    assert {
        row["country"]: (
            row["sent"],
            row["confirmed"],
            row["reported"],
            row["failed"],
            row["ttc_p50"],
            row["ttc_p90"],
        )
        for row in data["rows"]
    } == {
        country: (f.sent, f.confirmed, f.reported, f.failed, _seconds(f.p50), _seconds(f.p90))
        for country, f in BY_COUNTRY.items()
    }
    assert data["total"]["sent"] == TOTAL.sent
    assert data["total"]["conversion"] == pytest.approx(TOTAL.conversion)

    rows = list(csv.DictReader(io.StringIO(report_of("--by", "sender", "--csv"))))
    assert {
        row["sender"]: (int(row["sent"]), int(row["confirmed"]), row["ttc_p50"], row["ttc_p90"])
        for row in rows
    } == {
        sender: (f.sent, f.confirmed, f"{f.p50:g}", "" if math.isinf(f.p90 or 0) else f"{f.p90:g}")
        for sender, f in BY_SENDER.items()
    }

    table = report_of("--by", "day,country").splitlines()
    shown = {
        (line.split()[0], line.split()[1]): line.split()[2:5]
        for line in table[3:]
        if line[:4].isdigit()
    }
    assert shown == {
        (str(day - timedelta(days=ago)), country): [
            str(f.sent),
            str(f.confirmed),
            f"{f.conversion * 100:.1f}%",
        ]
        for (ago, country), f in BY_DAY_COUNTRY.items()
    }
    total = next(line for line in table if line.startswith("total")).split()
    assert total[1:4] == [str(TOTAL.sent), str(TOTAL.confirmed), f"{TOTAL.conversion * 100:.1f}%"]

    before = report_of("--by", "day,country,sender", "--json")
    traffic_store.purge(now=time.time() + 30 * 86400.0)
    after = report_of("--by", "day,country,sender", "--json")

    def figures(text: str) -> Any:
        return json.loads(text)["rows"]

    assert figures(after) == figures(before), "purging every record changed a past figure"


def test_the_docs_python_snippet_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Conversion insights page's snippet, on a tracker with the dataset's last 45
    days ending today (France declining)."""
    (snippet,) = _blocks("python")
    CellStore.until = datetime.now(timezone.utc).date()
    store = CellStore("insights-test://x")
    settings = Settings(
        account_sid="AC" + "0" * 32, auth_token="t" * 32, secret_key=SECRET_KEY, store=store
    )
    monkeypatch.chdir(tmp_path)
    with FeedbackTracker(settings) as tracker:
        exec(compile(snippet, str(DOCS), "exec"), {"tracker": tracker})
    out = capsys.readouterr().out
    assert out.startswith("Conversion insights, ")
    assert out.rstrip().endswith("FR fell 27%")
    assert "<svg" in (tmp_path / "report.html").read_text(encoding="utf-8")
