from __future__ import annotations

import pytest

from twilio_feedback import ConfirmResult, FeedbackTracker, Settings
from twilio_feedback.bots import BotMatcher
from twilio_feedback.confirm import MAX_FORM_BYTES, ConfirmGate

from .conftest import CHROME


@pytest.fixture
def gate(tracker: FeedbackTracker) -> ConfirmGate:
    return ConfirmGate(tracker)


def _gate(settings: Settings, **changes: object) -> ConfirmGate:
    tracker = FeedbackTracker(settings.replace(**changes))
    tracker.close()
    return ConfirmGate(tracker, bots=BotMatcher([]))


def test_exact_and_prefix_paths(gate: ConfirmGate, settings: Settings) -> None:
    assert gate.matches("/confirm")
    assert not gate.matches("/confirm/x")
    assert not gate.matches("/")
    prefix = _gate(settings, confirm_paths=("/c/",), path_match="prefix")
    assert prefix.matches("/c/abc")
    assert not prefix.matches("/cabc")


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "PUT", "DELETE"])
def test_methods_that_never_confirm(gate: ConfirmGate, method: str) -> None:
    assert gate.screen(method, CHROME) == ConfirmResult("ignored", reason="method does not confirm")


def test_head_never_confirms_even_if_configured(settings: Settings) -> None:
    assert _gate(settings, confirm_methods=("GET", "HEAD")).screen("HEAD", CHROME) is not None


def test_bots_are_screened_people_pass(gate: ConfirmGate) -> None:
    assert gate.screen("GET", "TelegramBot (like TwitterBot)") is not None
    assert gate.screen("GET", CHROME) is None
    assert gate.screen("POST", CHROME) is None


@pytest.mark.parametrize(
    ("query", "token"),
    [
        ("id=abc", "abc"),
        ("a=1&id=abc&id=def", "abc"),
        ("a=1", None),
        ("", None),
        ("id=", ""),
        ("i%64=abc", "abc"),
        ("id=a%2Bb", "a+b"),
        ("&&&=&id", ""),
    ],
)
def test_token_from_query(gate: ConfirmGate, query: str, token: str | None) -> None:
    assert gate.token_from_query(query) == token


def test_token_from_form(gate: ConfirmGate) -> None:
    assert gate.token_from_form(b"x=1&id=tok") == "tok"
    assert gate.token_from_form(b"x=1") is None
    assert gate.token_from_form("id=\u00e9".encode()) == "\u00e9"


def test_wants_body(gate: ConfirmGate) -> None:
    form = "application/x-www-form-urlencoded; charset=utf-8"
    assert gate.wants_body("POST", form, 10)
    assert not gate.wants_body("GET", form, 10)
    assert not gate.wants_body("POST", "application/json", 10)
    assert not gate.wants_body("POST", form, None)
    assert not gate.wants_body("POST", form, MAX_FORM_BYTES + 1)


def test_strip_token(gate: ConfirmGate) -> None:
    assert gate.strip_token("a=1&id=x&b=2") == "a=1&b=2"
    assert gate.strip_token("id=x") == ""


def test_redirects_only_from_settings(settings: Settings, gate: ConfirmGate) -> None:
    assert gate.redirect_for(ConfirmResult("confirmed")) is None
    g = _gate(settings, confirmed_redirect="/ok", invalid_redirect="/bad")
    assert g.redirect_for(ConfirmResult("confirmed")) == "/ok"
    assert g.redirect_for(ConfirmResult("duplicate")) == "/ok"
    assert g.redirect_for(ConfirmResult("ignored")) == "/ok"
    assert g.redirect_for(ConfirmResult("invalid")) == "/bad"
    assert g.redirect_for(ConfirmResult("expired")) == "/bad"
    assert g.redirect_for(ConfirmResult("error")) == "/bad"
    g2 = _gate(settings, confirmed_redirect="/ok", expired_redirect="/old")
    assert g2.redirect_for(ConfirmResult("expired")) == "/old"
    assert g2.redirect_for(ConfirmResult("unknown")) == "/ok"
