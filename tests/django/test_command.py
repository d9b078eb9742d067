"""``manage.py twilio_feedback``: the command line's store commands on the project's
settings (``call_command`` here; the real ``manage.py`` in tests/examples)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from twilio_feedback.django import get_tracker
from twilio_feedback.django.store import DjangoStore
from twilio_feedback.records import Record, State
from twilio_feedback.testing import FakeTwilio


def _run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("twilio_feedback", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.usefixtures("on_emulator")
def test_status_counts_the_projects_store() -> None:
    store = get_tracker().store
    store.add(Record("p1", expires_at=time.time() + 3600))
    out, _ = _run("status")
    assert "store      django://" in out
    assert "pending           1" in out
    data, _ = _run("status", "--json")
    assert '"pending": 1' in data


def test_drain_reports_with_the_projects_credentials(
    on_emulator: Callable[..., Any], fake_twilio: FakeTwilio
) -> None:
    tracker = get_tracker()
    message = tracker.send(to="+15558675310", from_="+15017122661", body="Hi {link}", link="/c")
    # Confirmed by a process that died before reporting it.
    [record] = tracker.store.list_records(State.PENDING, limit=1)
    now = time.time()
    tracker.store.confirm(record.tracking_id, now=now, lease_until=now, keep_until=now + 3600)
    out, _ = _run("drain")
    assert "1 reported" in out or "reported 1" in out, out
    assert [post.message_sid for post in fake_twilio.feedback] == [message.sid]
    assert tracker.store.counts()["reported"] == 1


@pytest.mark.usefixtures("on_emulator")
def test_a_failing_command_raises_command_error() -> None:
    with pytest.raises(CommandError) as failed:
        _run("status", "--failed", "zero")
    assert failed.value.returncode == 2


@pytest.mark.usefixtures("on_emulator")
def test_purge() -> None:
    store = DjangoStore()  # no tracker: its reporter would purge first
    store.add(Record("old", expires_at=time.time() - 86400))
    out, _ = _run("purge")
    assert out == "purged 1 expired record(s)\n"
    assert store.get("old") is None


def test_the_help_lists_every_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.management import load_command_class

    from ..test_flask import cli_commands, lists_every_command

    monkeypatch.setenv("COLUMNS", "80")
    command = load_command_class("twilio_feedback.django", "twilio_feedback")
    command.print_help("manage.py", "twilio_feedback")  # `manage.py help twilio_feedback`
    assert lists_every_command(capsys.readouterr().out)
    with pytest.raises(SystemExit) as done:  # `manage.py twilio_feedback --help`
        command.run_from_argv(["manage.py", "twilio_feedback", "--help"])
    assert done.value.code == 0
    usage = capsys.readouterr().out
    assert all(f"\n    {name} " in usage for name in cli_commands()), usage
