"""Structured logs: every log call of the package names its event in ``extra``, and a
scripted run logged as JSON (the Metrics and logs page's example) carries the fields a
pipeline indexes, and no secret."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from twilio_feedback import FeedbackTracker, Record, Settings
from twilio_feedback.confirm import ConfirmGate
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.tokens import TokenSigner

from .conftest import CHROME, SECRET_KEY
from .servers import wait_until

ROOT = Path(__file__).resolve().parents[1]
PHONE = "+15558675310"
SENDER = "+15017122661"
BODY = "Your sign-in link for Example Co: {link}"
UNKNOWN_SID = "SM" + "0" * 32  # FakeTwilio answers 404 for feedback on it
PASSWORD = "hunter2-store-password"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


generated = _load(ROOT / "docs" / "hooks" / "generated.py", "docs_hooks_generated_logs")
json_logs = _load(ROOT / "examples" / "json_logs.py", "example_json_logs")


def test_every_log_call_names_its_event_in_extra() -> None:
    calls = generated.log_calls()
    assert len(calls) > 40  # the walk finds them (51 when this was written)
    problems = [f"{c.path}:{c.line}: {c.problem}" for c in calls if c.problem]
    assert not problems, "\n".join(problems)


def test_fields_never_clash_with_log_record_attributes() -> None:
    reserved = set(logging.LogRecord("n", 0, "p", 0, "m", None, None).__dict__)
    reserved |= {"message", "asctime", "taskName"}
    for call in generated.log_calls():
        clash = reserved & set(call.fields)
        assert not clash, f"{call.path}:{call.line}: {clash}"


def test_one_event_keeps_one_logger() -> None:
    loggers: dict[str, set[str]] = defaultdict(set)
    for call in generated.log_calls():
        if call.event:
            loggers[call.event].add(call.logger)
    assert {e: names for e, names in loggers.items() if len(names) > 1} == {}


def test_the_walk_sees_calls_without_extra(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text(
        "import logging\n"
        "log = logging.getLogger('pkg')\n"
        "log.info('a %s', 1)\n"
        "log.warning('b', extra={'event': 'b_happened', 'tracking_id': 'x'})\n"
        "log.log(logging.ERROR, 'c', extra={'event': 'Bad Name'})\n"
        "logging.getLogger('pkg.sub').debug('d', extra=fields)\n"
    )
    calls = generated.log_calls(package)
    assert [(c.logger, c.level, c.event, c.fields, c.problem) for c in calls] == [
        ("pkg", "info", None, (), "no extra="),
        ("pkg", "warning", "b_happened", ("tracking_id",), None),
        ("pkg", "error", None, (), "event 'Bad Name' is not snake_case"),
        ("pkg.sub", "debug", None, (), "extra= is not a dict literal with string keys"),
    ]


class FlakyStore(MemoryStore):
    """A custom store whose server can be "down" (its confirm raises, with a password in
    the driver's message, as drivers do)."""

    down = False

    def confirm(self, tracking_id: str, **kwargs: Any) -> tuple[bool, Record | None]:
        if self.down:
            raise ConnectionError(f"redis://app:{PASSWORD}@10.0.0.7:6379/0 refused")
        return super().confirm(tracking_id, **kwargs)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger("twilio_feedback")
    level = logger.level
    handler = json_logs.log_as_json(stream, logging.DEBUG)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_scripted_run_logs_json_with_its_fields(
    json_lines: io.StringIO, fake_twilio: FakeTwilio
) -> None:
    store = FlakyStore()
    settings = Settings(
        account_sid=fake_twilio.account_sid,
        auth_token=fake_twilio.auth_token,
        secret_key=SECRET_KEY,
        store=store,
        api_base_url=fake_twilio.base_url,
        request_timeout=5.0,
        deferred_size=1,
    )
    tracker = FeedbackTracker(settings)
    tokens = []
    try:
        fake_twilio.fail_next(503)
        tracker.send(to=PHONE, from_=SENDER, body=BODY, link="https://app.example/confirm")
        sent = fake_twilio.messages[-1]
        tokens.append(sent.body.rsplit("id=", 1)[1])
        assert tracker.confirm_token(tokens[0]).confirmed
        assert tracker.flush(10) == 0
        refused = tracker.ticket()
        tracker.bind(refused, UNKNOWN_SID)
        assert tracker.confirm_token(refused.token).confirmed
        assert tracker.flush(10) == 0

        gate = ConfirmGate(tracker)
        assert gate.decide("HEAD", f"id={tokens[0]}", {"user-agent": CHROME}).result.status == (
            "ignored"
        )
        assert tracker.confirm_token(tokens[0][:-2] + "AA").status == "invalid"
        expired = TokenSigner(SECRET_KEY, timer=lambda: time.time() - 30 * 86400).issue()[1]
        assert tracker.confirm_token(expired).status == "expired"
        unknown = tracker.ticket()
        assert tracker.confirm_token(unknown.token).status == "unknown"

        waiting = [tracker.ticket() for _ in range(2)]
        for ticket, sid in zip(waiting, fake_twilio.add_messages(2), strict=True):
            tracker.bind(ticket, sid)
        store.down = True
        assert tracker.confirm_token(waiting[0].token).status == "deferred"
        assert tracker.confirm_token(waiting[1].token).status == "error"
        store.down = False
        wait_until(lambda: tracker.stats()["replayed"] == 1, 30, "the deferred confirmation")
        assert tracker.flush(10) == 0
    finally:
        tracker.close(timeout=2)

    text = json_lines.getvalue()
    records = [json.loads(line) for line in text.splitlines()]
    assert records
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        assert record["event"], record
        assert record["name"].startswith("twilio_feedback")
        events[record["event"]].append(record)

    def one(event: str, **fields: Any) -> dict[str, Any]:
        found = [r for r in events[event] if fields.items() <= r.items()]
        assert found, (event, fields, events.get(event))
        return found[0]

    first = tracker.signer.verify(tokens[0], 3600).tracking_id
    one("report_retry", tracking_id=first, message_sid=sent.sid, attempt=1, twilio_code=20503)
    one("report_retry", http_status=503, reason="5xx", levelname="INFO")
    one("report_accepted", tracking_id=first, message_sid=sent.sid, attempt=2)
    one("report_failed", tracking_id=refused.tracking_id, message_sid=UNKNOWN_SID, attempt=1)
    one("report_failed", twilio_code=20404, http_status=404, outcome="failed", reason="refused")
    one("confirm_ignored", outcome="ignored", reason="method", method="HEAD")
    one("confirm_invalid", outcome="invalid")
    one("confirm_expired", outcome="expired")
    one("confirm_unknown", outcome="unknown", tracking_id=unknown.tracking_id)
    one("confirm_deferred", outcome="deferred", tracking_id=waiting[0].tracking_id)
    one("store_failed", backend="FlakyStore", operation="confirm", error_type="ConnectionError")
    one("store_failed", levelname="WARNING", count=1)
    one("deferred_dropped", outcome="error", tracking_id=waiting[1].tracking_id)
    one("deferred_confirmation_applied", tracking_id=waiting[0].tracking_id)
    one("twilio_request", method="POST")

    # Readable messages, and nothing secret or personal anywhere in a record.
    assert "feedback for " + UNKNOWN_SID + " failed for good" in text
    for secret in (
        fake_twilio.auth_token,
        SECRET_KEY,
        *tokens,
        refused.token,
        waiting[0].token,
        PHONE,
        "Your sign-in link",
        PASSWORD,
    ):
        assert secret not in text, secret
