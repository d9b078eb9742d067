"""``twilio-feedback emulator``: FakeTwilio for local development, as a developer runs it."""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.stores.memory import MemoryStore

from ..conftest import SECRET_KEY

COMMAND = str(Path(sys.executable).parent / "twilio-feedback")
TO = "+15558675310"


class Lines:
    """A process's output, line by line, each waited for with a deadline."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def until(self, start: str, timeout: float = 20.0) -> str:
        while True:
            line = self.queue.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"the output ended before a line starting {start!r}")
            if line.startswith(start):
                return line


@contextlib.contextmanager
def ctrl_c_reaches_children() -> Iterator[None]:
    """Children started here take SIGINT as a terminal's Ctrl-C. A run started in the
    background of a non-interactive shell (``pytest &``) ignores SIGINT, and a child
    inherits an ignored signal: Python would then install no KeyboardInterrupt handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def emulator() -> Iterator[Lines]:
    with ctrl_c_reaches_children():
        process = subprocess.Popen(
            [COMMAND, "emulator", "--account-sid", "AC" + "ab" * 16, "--auth-token", "tok"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    lines = Lines(process)
    try:
        yield lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        lines.reader.join(10)
        assert process.stdout is not None
        process.stdout.close()


def test_prints_the_settings_then_what_the_app_sends_until_ctrl_c(emulator: Lines) -> None:
    banner = emulator.until("FakeTwilio")
    assert "http://127.0.0.1:" in banner
    assert "Ctrl-C" in banner
    environ = dict(
        emulator.until(f"export {name}=").removeprefix("export ").split("=", 1)
        for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FEEDBACK_API_BASE_URL")
    )
    assert environ["TWILIO_ACCOUNT_SID"] == "AC" + "ab" * 16
    assert environ["TWILIO_AUTH_TOKEN"] == "tok"

    settings = Settings.from_env(environ, secret_key=SECRET_KEY, store=MemoryStore())
    with FeedbackTracker(settings) as tracker:
        message = tracker.send(
            to=TO, from_="+15017122661", body="Open {link}", link="http://127.0.0.1:8000/confirm"
        )
        line = emulator.until("message ")
        assert line.startswith(f"message  {message.sid} to {TO}: Open http://127.0.0.1:8000/")
        token = line.rsplit("id=", 1)[1]
        assert tracker.confirm_token(token).confirmed
        assert emulator.until("feedback ") == f"feedback {message.sid} Outcome=confirmed"

    emulator.process.send_signal(signal.SIGINT)
    assert emulator.until("stopped") == "stopped"
    assert emulator.process.wait(10) == 0


def test_sigterm_stops_it_as_ctrl_c_does(emulator: Lines) -> None:
    # docker stop, systemd, a Procfile runner: they send SIGTERM.
    emulator.until("Messages sent through it")
    emulator.process.send_signal(signal.SIGTERM)
    assert emulator.until("stopped") == "stopped"
    assert emulator.process.wait(30) == 0


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [COMMAND, "emulator", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"cannot listen on port {port}" in done.stderr


def test_help() -> None:
    done = subprocess.run(
        [COMMAND, "emulator", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "--port" in done.stdout
