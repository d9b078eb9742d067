"""The HTML report in a real browser: headless Chromium from the distribution's packages
(scripts/test installs it), driven over its DevTools pipe (tests/browser.py).

The page opens with no console error and no request beyond its own file, its charts are
drawn (one line per top country, one bar per time-to-confirm bucket, each with a size on
screen), and a screenshot is kept: in the test's temporary directory, and copied to
``$TEST_ARTIFACTS_DIR`` when that is set (CI keeps it)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from twilio_feedback import report
from twilio_feedback.insights import TTC_BUCKETS, Insights

from . import browser, insights_data, insights_screenshot
from .servers import _missing

pytestmark = pytest.mark.timeout(60)

ARTIFACTS_ENV = "TEST_ARTIFACTS_DIR"
UNTIL = insights_data.UNTIL


@pytest.fixture(scope="module")
def chromium() -> Iterator[browser.Chromium]:
    if browser.executable() is None:
        _missing("Chromium", "chromium")
    with browser.chromium(width=1100, height=900) as opened:
        yield opened


def keep(path: Path) -> None:
    """Copy an artifact to ``$TEST_ARTIFACTS_DIR``, when set."""
    target = os.environ.get(ARTIFACTS_ENV)
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(target) / path.name)


def write(tmp_path: Path, built: report.Report, name: str = "report.html") -> Path:
    path = tmp_path / name
    path.write_text(report.to_html(built), encoding="utf-8")
    return path


def test_the_report_opens_with_its_charts_drawn(chromium: browser.Chromium, tmp_path: Path) -> None:
    built = report.collect(insights_data.Source(), since=UNTIL - timedelta(days=29), until=UNTIL)
    path = write(tmp_path, built)
    page = chromium.open(path)
    assert page.errors == []
    assert page.requests == [path.resolve().as_uri()], "the page asked for something else"

    # One line per top country, each drawn through its 30 days.
    series = chromium.evaluate(
        """[...document.querySelectorAll('svg.conversion g.series')].map(g => {
            const path = g.querySelector('path'), box = path.getBBox();
            return {country: g.dataset.country, declining: g.classList.contains('declining'),
                    points: g.querySelectorAll('circle').length,
                    width: box.width, height: box.height,
                    stroke: getComputedStyle(path).stroke,
                    dashed: getComputedStyle(path).strokeDasharray !== 'none'};
        })"""
    )
    assert [s["country"] for s in series] == ["US", "GB", "FR", "DE", "BR"]
    for line in series:
        assert line["points"] == 30, line
        assert line["width"] > 600, line
        assert line["height"] > 5, line
        assert line["dashed"] == line["declining"] == (line["country"] == "FR"), line
    assert len({line["stroke"] for line in series}) == 5, "two lines share a colour"
    legend = chromium.evaluate(
        "[...document.querySelectorAll('.legend li')].map(li => li.textContent)"
    )
    assert len(legend) == 5
    assert "declining" in legend[2]

    # One bar per bucket, as tall as its count says.
    bars = chromium.evaluate(
        """[...document.querySelectorAll('svg.ttc rect.bar')].map(bar => {
            const box = bar.getBoundingClientRect();
            return {count: Number(bar.dataset.count), width: box.width, height: box.height};
        })"""
    )
    assert len(bars) == len(TTC_BUCKETS)
    assert all(bar["width"] > 20 for bar in bars)
    assert all((bar["height"] > 0) == (bar["count"] > 0) for bar in bars)
    biggest = max(bars, key=lambda bar: bar["count"])
    assert biggest["height"] == max(bar["height"] for bar in bars)

    # The table: a header, one row per day and country, a total; the flag on top.
    assert chromium.evaluate("document.querySelectorAll('table tbody tr').length") == 30 * 7
    assert chromium.evaluate("document.querySelector('#declining').textContent").startswith(
        "FR: 57.6% in the last 7 days"
    )

    shot = tmp_path / "insights-report.png"
    data = chromium.screenshot(shot)
    width, height = browser.png_size(data)
    assert width == 1100
    assert height == chromium.evaluate("document.documentElement.scrollHeight") > 900
    keep(shot)


def test_the_report_of_a_store_without_insights_opens_too(
    chromium: browser.Chromium, tmp_path: Path
) -> None:
    unavailable = report.Report(
        Insights([], UNTIL, UNTIL, ("day",), available=False, note="This store keeps no insights.")
    )
    page = chromium.open(write(tmp_path, unavailable, "unavailable.html"))
    assert page.errors == []
    assert chromium.evaluate("document.querySelectorAll('svg').length") == 0
    assert "This store keeps no insights." in chromium.evaluate("document.body.innerText")


def test_a_console_error_would_be_seen(chromium: browser.Chromium, tmp_path: Path) -> None:
    """The check above can fail: a page that breaks its own policy is caught."""
    path = tmp_path / "broken.html"
    html = report.to_html(report.build(insights_data.insights()))
    path.write_text(html.replace("</main>", "</main><img src='missing.png'>"), encoding="utf-8")
    page = chromium.open(path)
    assert any("Content Security Policy" in error for error in page.errors), page.errors


def test_the_screenshot_in_the_docs_is_the_scripts(tmp_path: Path) -> None:
    """docs/img/insights-report.png is what tests/insights_screenshot.py draws (its size:
    fonts differ between machines, so not pixel for pixel), and stays small."""
    if browser.executable() is None:
        _missing("Chromium", "chromium")
    committed = Path(__file__).resolve().parents[1] / "docs" / "img" / "insights-report.png"
    shot = tmp_path / "insights-report.png"
    width, height = insights_screenshot.render(shot)
    assert browser.png_size(committed.read_bytes())[0] == width == insights_screenshot.WIDTH
    assert abs(browser.png_size(committed.read_bytes())[1] - height) < height * 0.1
    assert committed.stat().st_size < 300_000
    keep(shot)
