"""The screenshot on the Conversion insights page (docs/img/insights-report.png): the HTML
report of the scripted dataset (tests/insights_data.py), grouped by country, in headless
Chromium. Run from the repository's root after changing the report's looks::

    .venv/bin/python -m tests.insights_screenshot docs/img/insights-report.png

The report tests run it too, into a temporary directory."""

from __future__ import annotations

import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from twilio_feedback import report

from . import browser, insights_data

WIDTH = 1000
"""The page's width in CSS pixels (the screenshot's, at a device scale of 1)."""


def render(out: Path) -> tuple[int, int]:
    """Write the screenshot to ``out``; its width and height come back."""
    built = report.collect(
        insights_data.Source(),
        since=insights_data.UNTIL - timedelta(days=29),
        until=insights_data.UNTIL,
        by=("country",),
        generated_at=datetime(2026, 11, 16, 6, 0, tzinfo=timezone.utc),
    )
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "report.html"
        page.write_text(report.to_html(built), encoding="utf-8")
        with browser.chromium(width=WIDTH, height=800) as chromium:
            loaded = chromium.open(page)
            if loaded.errors:
                raise browser.BrowserError(f"the report logged errors: {loaded.errors}")
            return browser.png_size(chromium.screenshot(out))


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/insights-report.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    width, height = render(target)
    print(f"wrote {target}: {width}x{height}, {target.stat().st_size:,} bytes")
