from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_demo_runs_the_whole_loop() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twilio_feedback.cli", "demo", "--twilio-latency", "0.3"],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ProvideFeedback=true" in out
    assert "-> ignored" in out
    assert "-> confirmed" in out
    assert "Outcome=confirmed" in out
    assert "-> duplicate" in out
    assert "1 confirmed, 1 reported to Twilio, 0 failed; all good." in out


def test_cli_help_and_bad_usage() -> None:
    from twilio_feedback.cli import main

    with pytest.raises(SystemExit) as info:
        main(["nope"])
    assert info.value.code == 2
