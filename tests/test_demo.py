"""The demo, run as a user runs it: in a subprocess, on 127.0.0.1 only."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

PHONE_BROWSER = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


def _env() -> dict[str, str]:
    """The environment without any Twilio credentials: the demo needs none."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}


def _check_story(out: str) -> None:
    assert "ProvideFeedback=true" in out
    for preview in ("iMessage link preview", "WhatsApp link preview", "Slack link expander"):
        assert re.search(rf"{preview} fetched it +-> ignored", out), out
    assert re.search(r"The person opened it +-> confirmed", out)
    assert "Feedback.json  Outcome=confirmed" in out
    assert "Opened again -> duplicate" in out
    assert "visits      ignored, ignored, ignored, confirmed, duplicate" in out
    assert "reported    1 Outcome=confirmed post(s), 0 failed" in out
    assert "result      all good" in out


def test_python_m_demo_runs_the_whole_loop_in_a_few_seconds() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "twilio_feedback.demo", "--twilio-latency", "2"],
        capture_output=True,
        text=True,
        timeout=90,
        env=_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _check_story(done.stdout)
    # Generous: its imports alone took 17 s once on a loaded 2-core machine.
    assert time.monotonic() - started < 60
    response_ms = int(re.search(r"response +(\d+) ms", done.stdout).group(1))  # type: ignore[union-attr]
    assert response_ms < 1000  # the emulator took 2 s; the person's page did not wait


def test_the_console_script_runs_it() -> None:
    script = Path(sys.executable).with_name("twilio-feedback")
    if not script.exists():
        pytest.skip("the twilio-feedback script is not installed next to this Python")
    done = subprocess.run(
        [str(script), "demo", "--twilio-latency", "0.2"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _check_story(done.stdout)


def test_interactive_waits_for_the_person() -> None:
    lines: queue.Queue[str] = queue.Queue()
    command = [sys.executable, "-m", "twilio_feedback.demo", "--interactive"]
    with subprocess.Popen(
        [*command, "--twilio-latency", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    ) as process:
        output = process.stdout
        assert output is not None

        def pump() -> None:
            for line in output:
                lines.put(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            link = None
            while link is None:
                line = lines.get(timeout=30)
                found = re.search(r"(http://127\.0\.0\.1:\d+/confirm\?id=[\w-]+)", line)
                link = found.group(1) if found else None
            with httpx.Client(trust_env=False) as http:
                preview = http.get(link, headers={"User-Agent": "WhatsApp/2.23.20.0 A"})
                assert preview.headers["x-feedback-status"] == "ignored"
                page = http.get(link, headers={"User-Agent": PHONE_BROWSER})
                assert page.headers["x-feedback-status"] == "confirmed"
                assert "signed in" in page.text
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
        reader.join(10)
    out = "".join(lines.get_nowait() for _ in range(lines.qsize()))
    assert process.returncode == 0, out
    assert "a visit: ignored (link preview or scanner)" in out
    assert "a visit: confirmed" in out
    assert "result      all good" in out


def test_live_needs_to_and_from_and_sends_nothing_without_them() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twilio_feedback.demo", "--live"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert done.returncode == 2
    assert "--live needs --to" in done.stdout


def test_live_without_credentials_says_so_and_sends_nothing() -> None:
    numbers = ["--to", "+15558675310", "--from", "+15017122661"]
    done = subprocess.run(
        [sys.executable, "-m", "twilio_feedback.demo", "--live", *numbers],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert done.returncode == 2
    assert "account_sid is missing" in done.stdout


def test_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twilio_feedback.demo", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert done.returncode == 0
    assert "--interactive" in done.stdout
    assert "--live" in done.stdout
