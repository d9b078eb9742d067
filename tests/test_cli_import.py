"""Store schemes registered in code (``register_store``) reach the command line through
``--import MODULE`` or ``TWILIO_FEEDBACK_IMPORT``; each run is a fresh interpreter, as a
shell would start it, in the directory of examples/custom_store.py (``dict://``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COMMAND = Path(sys.executable).parent / "twilio-feedback"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    base.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(COMMAND), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=EXAMPLES,
        env={**base, **(env or {})},
    )


def test_import_option_registers_the_scheme() -> None:
    done = _run("--import", "custom_store", "status", "--store", "dict://", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {
        "pending": 0,
        "confirmed": 0,
        "reported": 0,
        "failed": 0,
    }


def test_import_environment_variable_registers_the_scheme() -> None:
    done = _run(
        "status",
        "--json",
        env={"TWILIO_FEEDBACK_IMPORT": "json, custom_store", "TWILIO_FEEDBACK_STORE": "dict://"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["store"] == "dict://"


def test_without_the_import_the_scheme_is_unknown_and_the_error_says_how() -> None:
    done = _run("status", "--store", "dict://")
    assert done.returncode == 2
    assert "unknown store scheme dict://" in done.stderr
    assert "--import MODULE or $TWILIO_FEEDBACK_IMPORT" in done.stderr


def test_a_module_that_cannot_be_imported_is_a_usage_error() -> None:
    done = _run("--import", "no_such_module_here", "status", "--store", "dict://")
    assert done.returncode == 2
    assert "cannot import no_such_module_here" in done.stderr
    assert "Traceback" not in done.stderr
