"""The ``twilio-feedback`` command: store operations, errors, the demo's delegation."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from twilio_feedback import Record, health
from twilio_feedback.cli import Progress, main
from twilio_feedback.settings import redact_text, redact_url
from twilio_feedback.stores import base, register_store
from twilio_feedback.stores.sql import SQLStore
from twilio_feedback.testing import FakeTwilio

pytestmark = pytest.mark.timeout(60)

STORE_ENV = "TWILIO_FEEDBACK_STORE"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray TWILIO_* variables from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("TWILIO_"):
            monkeypatch.delenv(name)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/feedback.db"


@pytest.fixture
def store(url: str) -> Iterator[SQLStore]:
    store = SQLStore(url)
    yield store
    store.close()


@pytest.fixture
def twilio_env(fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> FakeTwilio:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", fake_twilio.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", fake_twilio.auth_token)
    monkeypatch.setenv("TWILIO_FEEDBACK_API_BASE_URL", fake_twilio.base_url)
    monkeypatch.setenv("TWILIO_FEEDBACK_REQUEST_TIMEOUT", "2")
    return fake_twilio


def confirmed(store: SQLStore, sids: list[str], *, lease: float = -1.0) -> list[str]:
    """Confirmed records, one per SID, whose lease has ended (a crashed app's outbox)."""
    now = time.time()
    ids = []
    for n, sid in enumerate(sids):
        tracking_id = f"t{n}"
        store.add(Record(tracking_id, expires_at=now + 3600, message_sid=sid, created_at=now))
        assert store.confirm(tracking_id, now=now, lease_until=now + lease, keep_until=now)[0]
        ids.append(tracking_id)
    return ids


# -- status ------------------------------------------------------------------------------


def test_status_counts_by_state(
    store: SQLStore, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    confirmed(store, ["SM" + "a" * 32, "SM" + "b" * 32])
    store.add(Record("p", expires_at=time.time() + 60))
    assert main(["status", "--store", url]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert (lines["pending"], lines["confirmed"], lines["reported"]) == ("1", "2", "0")


def test_status_reads_the_store_from_the_environment(
    store: SQLStore, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TWILIO_FEEDBACK_STORE", url)
    assert main(["status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "store": url,
        "counts": {"pending": 0, "confirmed": 0, "reported": 0, "failed": 0},
        "health": {
            "ok": True,
            "state": "ok",
            "oldest_unreported_age": None,
            "unreported": 0,
            "failed": 0,
            "pending": None,
            "max_age": 300.0,
        },
    }


def test_status_tells_whether_delivery_keeps_up(
    store: SQLStore, url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    # Ages are read at the test's "now", however long a loaded machine takes to get
    # there (it once printed 401s for 400s).
    monkeypatch.setattr(health, "time", SimpleNamespace(time=lambda: now))
    store.add(Record("old", expires_at=now + 3600, message_sid="SM" + "a" * 32, created_at=now))
    store.confirm("old", now=now - 400, lease_until=now + 60, keep_until=now + 3600)
    store.add(Record("new", expires_at=now + 3600, message_sid="SM" + "b" * 32, created_at=now))
    store.confirm("new", now=now - 5, lease_until=now + 60, keep_until=now + 3600)
    store.mark_failed("new", "SM" + "b" * 32, code=20404, message="gone")

    assert main(["status", "--store", url]) == 0  # without --check: always 0
    assert "health       behind  oldest unreported confirmation 400s old" in capsys.readouterr().out
    assert main(["status", "--store", url, "--check"]) == 3
    assert "behind" in capsys.readouterr().out
    assert main(["status", "--store", url, "--check", "--json"]) == 3
    seen = json.loads(capsys.readouterr().out)["health"]
    assert (seen["ok"], seen["state"], seen["unreported"], seen["failed"]) == (
        False,
        "behind",
        1,
        1,
    )
    assert seen["oldest_unreported_age"] == pytest.approx(400)
    assert main(["status", "--store", url, "--check", "--max-age", "900"]) == 0
    assert "health           ok" in capsys.readouterr().out
    store.mark_reported("old", "SM" + "a" * 32)
    assert main(["status", "--store", url, "--check"]) == 0
    assert "nothing waits to be reported" in capsys.readouterr().out


def test_status_check_of_an_unreachable_store_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _error(["status", "--check", "--store", "redis://127.0.0.1:1/0"], capsys, 1)


def test_status_lists_failed_records(
    store: SQLStore, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = confirmed(store, ["SM" + "a" * 32, "SM" + "b" * 32])
    store.mark_failed(
        ids[0], "SM" + "a" * 32, code=21610, message="Attempt to send to unsubscribed recipient"
    )
    assert main(["status", "--store", url, "--failed"]) == 0
    out = capsys.readouterr().out
    assert f"{ids[0]}  SM{'a' * 32}" in out
    assert "error 21610: Attempt to send to unsubscribed recipient" in out
    assert main(["status", "--store", url, "--failed", "5", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["tracking_id"] for r in data["failed"]] == [ids[0]]
    assert data["failed"][0]["state"] == "failed"


# -- drain -------------------------------------------------------------------------------


def test_drain_reports_every_unreported_confirmation(
    store: SQLStore, url: str, twilio_env: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    sids = twilio_env.add_messages(150)  # more than one claim batch
    confirmed(store, sids)
    store.add(
        Record("pending", expires_at=time.time() + 60, message_sid=twilio_env.add_messages(1)[0])
    )
    assert main(["drain", "--store", url]) == 0
    captured = capsys.readouterr()
    assert "150 reported, 0 failed, 0 left undelivered" in captured.out
    assert "drain [##############################] 150/150" in captured.err
    assert sorted(p.message_sid for p in twilio_env.feedback) == sorted(sids)
    assert store.counts() == {"pending": 1, "confirmed": 0, "reported": 150, "failed": 0}


def test_an_apps_own_settings_drive_the_commands(
    store: SQLStore, url: str, fake_twilio: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    """What framework commands do: no environment at all, the app's settings instead."""
    from twilio_feedback import Settings

    sids = fake_twilio.add_messages(3)
    confirmed(store, sids)
    settings = Settings(
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        secret_key="s" * 32,
        store=url,
        api_base_url=fake_twilio.base_url,
    )
    assert main(["status"], settings=settings, prog="manage.py twilio_feedback") == 0
    assert "confirmed         3" in capsys.readouterr().out
    assert main(["drain", "--quiet"], settings=settings) == 0
    assert "3 reported, 0 failed" in capsys.readouterr().out
    assert sorted(p.message_sid for p in fake_twilio.feedback) == sorted(sids)
    # The app's own Store instance works too, and is left open for the app.
    assert main(["status", "--json"], settings=settings.replace(store=store)) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["reported"] == 3
    assert store.counts()["reported"] == 3


def test_drain_with_nothing_to_do(
    store: SQLStore, url: str, twilio_env: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["drain", "--store", url, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "0 reported, 0 failed, 0 left undelivered" in captured.out
    assert captured.err == ""


def test_drain_leaves_records_another_process_holds(
    store: SQLStore, url: str, twilio_env: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    confirmed(store, twilio_env.add_messages(2), lease=600)  # a live app is reporting them
    assert main(["drain", "--store", url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "0 reported" in out
    assert "2 other confirmed record(s) are not due yet" in out
    assert twilio_env.feedback == []


def test_drain_records_refusals_as_failed(
    store: SQLStore, url: str, twilio_env: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = confirmed(store, twilio_env.add_messages(3))
    twilio_env.fail_always(404)
    assert main(["drain", "--store", url, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "0 reported, 3 failed, 0 left undelivered" in captured.out
    assert "status --failed" in captured.out
    assert "failed for good" in captured.err  # the reporter's warning, one line each
    assert all((r := store.get(i)) is not None and r.error_code == 20404 for i in ids)


def test_drain_gives_up_at_its_timeout_and_keeps_the_outbox(
    store: SQLStore, url: str, twilio_env: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    confirmed(store, twilio_env.add_messages(2))
    twilio_env.fail_always(503)
    started = time.monotonic()
    assert main(["drain", "--store", url, "--timeout", "1", "--quiet"]) == 1
    assert time.monotonic() - started < 10
    assert "0 reported, 0 failed, 2 left undelivered" in capsys.readouterr().out
    assert store.counts()["confirmed"] == 2


def test_drain_needs_twilio_credentials(
    url: str, capsys: pytest.CaptureFixture[str], store: SQLStore
) -> None:
    assert main(["drain", "--store", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("twilio-feedback: account_sid is missing")
    assert err.count("\n") == 1


# -- retry-failed and purge ----------------------------------------------------------------


def test_retry_failed_requeues_then_drain_delivers(
    store: SQLStore, url: str, twilio_env: FakeTwilio, capsys: pytest.CaptureFixture[str]
) -> None:
    sids = twilio_env.add_messages(3)
    ids = confirmed(store, sids)
    for tracking_id, sid in zip(ids[:2], sids, strict=False):
        store.mark_failed(tracking_id, sid, code=20003, message="Authenticate")
    store.mark_reported(ids[2], sids[2])
    assert main(["retry-failed", "--store", url]) == 0
    assert "re-queued 2 failed record(s)" in capsys.readouterr().out
    assert store.counts()["confirmed"] == 2

    store.mark_failed(ids[0], sids[0], code=20003, message="Authenticate")
    assert main(["retry-failed", "--store", url, "--drain", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "re-queued 1 failed record(s)" in out
    assert "2 reported, 0 failed, 0 left undelivered" in out  # ids[1] was due as well
    assert store.counts() == {"pending": 0, "confirmed": 0, "reported": 3, "failed": 0}


def test_purge(store: SQLStore, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    store.add(Record("old", expires_at=now - 1))
    store.add(Record("new", expires_at=now + 60))
    assert main(["purge", "--store", url]) == 0
    assert "purged 1 expired record(s)" in capsys.readouterr().out
    assert store.get("new") is not None


# -- mistakes --------------------------------------------------------------------------------


def _error(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 2) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err  # one line, no traceback
    return captured.err


def test_no_store(capsys: pytest.CaptureFixture[str]) -> None:
    assert "pass --store URL or set TWILIO_FEEDBACK_STORE" in _error(["status"], capsys)


def test_memory_store_is_out_of_reach(capsys: pytest.CaptureFixture[str]) -> None:
    assert "memory:// lives inside each app process" in _error(
        ["purge", "--store", "memory://"], capsys
    )


def test_unknown_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown store scheme mongodb://" in _error(
        ["status", "--store", "mongodb://db/x"], capsys
    )


def test_unreachable_store_hides_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(["status", "--store", "postgresql://app:s3cr3t@127.0.0.1:1/db"], capsys, 1)
    assert "postgresql://app:***@127.0.0.1:1/db" in err
    assert "s3cr3t" not in err
    err = _error(["status", "--store", "redis://:s3cr3t@127.0.0.1:1/0"], capsys, 1)
    assert "redis://:***@127.0.0.1:1/0" in err
    assert "s3cr3t" not in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "status", "--store", "redis://127.0.0.1:1/0"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_sqlite_in_memory_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert "use memory://" in _error(["status", "--store", "sqlite://"], capsys)


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["nope"], ["status", "--bogus"], ["drain", "--timeout", "-1"], []):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "usage: twilio-feedback" in capsys.readouterr().err


class _PlainStore:
    """A Store without the operator commands."""

    def __init__(self, url: str) -> None:
        from twilio_feedback.stores.memory import MemoryStore

        self.inner = MemoryStore()

    def __getattr__(self, name: str) -> Any:
        if name in ("list_records", "requeue_failed", "oldest_unreported"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def test_store_without_operator_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    register_store("plain-test", _PlainStore)
    assert main(["status", "--store", "plain-test://x"]) == 0
    capsys.readouterr()
    err = _error(["retry-failed", "--store", "plain-test://x"], capsys)
    assert "cannot re-queue failed records" in err
    assert "AdminStore" in err
    assert main(["status", "--store", "plain-test://x", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["health"]["state"] == "unknown"
    err = _error(["status", "--check", "--store", "plain-test://x"], capsys)
    assert "oldest_unreported() (HealthStore)" in err


def test_redact_url() -> None:
    assert redact_url("postgresql://u:p@h:5432/db?x=1") == "postgresql://u:***@h:5432/db?x=1"
    assert redact_url("redis://:p@h/0") == "redis://:***@h/0"
    assert redact_url("sqlite:///f.db") == "sqlite:///f.db"
    assert redact_url("redis://h:bad-port/0") == "redis://h:bad-port/0"
    assert redact_url("redis://:p@ss@h/0") == "redis://:***@h/0"
    assert redact_url("http://[::1") == "<unparsable URL>"
    assert (
        redact_url("postgresql://u@h/db?sslmode=require&PASSWORD=p&pwd=q&sslkey=k&x=#frag")
        == "postgresql://u@h/db?sslmode=require&PASSWORD=***&pwd=***&sslkey=***&x=#frag"
    )
    assert redact_url("sqlite:///f.db?client_secret=s") == "sqlite:///f.db?client_secret=***"


def test_redact_text_masks_urls_and_a_known_urls_secrets() -> None:
    url = "postgresql://u:p%40ss@h/db?password=w%20rd"
    text = f"could not connect to {url}: password 'p@ss' or 'w rd' rejected"
    redacted = redact_text(text, url)
    assert redacted == (
        "could not connect to postgresql://u:***@h/db?password=***: "
        "password '***' or '***' rejected"
    )


PASSWORD = "hunter2-pa55"
LEAKY_STORES = [
    f"postgresql://app:{PASSWORD}@127.0.0.1:1/db",
    f"postgresql://app@127.0.0.1:1/db?sslmode=disable&password={PASSWORD}",
    f"redis://:{PASSWORD}@127.0.0.1:1/0",
    f"redis://127.0.0.1:1/0?password={PASSWORD}",
    f"rediss://user:{PASSWORD}@127.0.0.1:1/0?ssl_cert_reqs=none",
]
COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["status", "--failed", "3"],
    ["drain", "--timeout", "1"],
    ["retry-failed"],
    ["purge"],
]


@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c))
@pytest.mark.parametrize("store_url", LEAKY_STORES)
def test_no_store_password_in_any_output(
    store_url: str,
    command: list[str],
    debug: list[str],
    twilio_env: FakeTwilio,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*debug, *command, "--store", store_url]) == 1  # nothing listens there
    captured = capsys.readouterr()
    assert "***" in captured.err
    assert PASSWORD not in captured.out + captured.err


def test_no_api_base_url_password_in_drain_output(
    store: SQLStore,
    url: str,
    twilio_env: FakeTwilio,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    confirmed(store, twilio_env.add_messages(2))
    twilio_env.fail_always(404)  # the reporter's warnings go to stderr
    monkeypatch.setenv(STORE_ENV, url)
    base_url = twilio_env.base_url.replace("://", f"://proxy:{PASSWORD}@")
    monkeypatch.setenv("TWILIO_FEEDBACK_API_BASE_URL", base_url)
    assert main(["--debug", "drain"]) == 0
    captured = capsys.readouterr()
    assert "2 failed" in captured.out
    assert PASSWORD not in captured.out + captured.err


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("TWILIO_FEEDBACK_API_BASE_URL", f"ftp://proxy:{PASSWORD}@egress", "ftp://proxy:***@"),
        ("TWILIO_FEEDBACK_API_BASE_URL", PASSWORD, "(12 characters)"),
        ("TWILIO_ACCOUNT_SID", "AC" + PASSWORD, "(14 characters)"),
        ("TWILIO_FEEDBACK_SECRET_KEY", f"{PASSWORD * 3},{PASSWORD * 3}", "contains a comma"),
        ("TWILIO_FEEDBACK_SECRET_KEY", PASSWORD, "12 characters"),
        ("TWILIO_FEEDBACK_REQUEST_TIMEOUT", PASSWORD, "number of seconds"),
    ],
)
def test_settings_errors_in_drain_show_no_secret(
    variable: str,
    value: str,
    shown: str,
    url: str,
    twilio_env: FakeTwilio,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, value)
    err = _error(["drain", "--store", url], capsys)
    assert shown in err
    assert PASSWORD not in err


def test_a_store_that_is_not_a_url_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(["status", "--store", PASSWORD * 2], capsys)
    assert "'hu'... (24 characters) is not a URL" in err
    assert PASSWORD not in err


# -- the progress bar ---------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_in_place_on_a_terminal() -> None:
    out = _Terminal()
    progress = Progress(out)
    progress.update(0, 4, 0)
    progress.update(2, 4, 1, final=True)
    assert out.getvalue() == (
        "\rdrain [------------------------------] 0/4"
        "\rdrain [###############---------------] 2/4 (1 failed)\n"
    )


def test_progress_prints_lines_elsewhere() -> None:
    out = io.StringIO()
    progress = Progress(out)
    progress.update(1, 2, 0)
    progress.update(1, 2, 0)  # within a second: not repeated
    progress.update(2, 2, 0, final=True)
    assert out.getvalue().splitlines() == [
        "drain [###############---------------] 1/2",
        "drain [##############################] 2/2",
    ]
    quiet = io.StringIO()
    Progress(quiet, enabled=False).update(1, 1, 0, final=True)
    assert quiet.getvalue() == ""


# -- the demo -------------------------------------------------------------------------------


def test_demo_is_imported_only_when_it_runs(
    monkeypatch: pytest.MonkeyPatch, url: str, store: SQLStore, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "twilio_feedback.demo", None)  # as if it did not exist
    assert main(["status", "--store", url]) == 0
    capsys.readouterr()
    assert main(["demo"]) == 2
    assert "the demo is not available" in capsys.readouterr().err


def test_demo_options_reach_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from twilio_feedback import demo

    seen: list[argparse.Namespace] = []

    def run(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(demo, "run", run)
    assert main(["demo", "--twilio-latency", "0.1", "--to", "+15550000000"]) == 0
    assert seen[0].twilio_latency == 0.1
    assert seen[0].to == "+15550000000"


def test_console_script_runs(url: str, store: SQLStore) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "twilio_feedback.cli", "status", "--store", url, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["pending"] == 0
