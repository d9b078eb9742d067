"""ConfirmGate: every rule of the middleware, without a protocol in sight."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twilio_feedback import ConfirmResult, FeedbackTracker, Settings, Ticket
from twilio_feedback.bots import BotMatcher
from twilio_feedback.confirm import MAX_FIELDS, MAX_FORM_BYTES, ConfirmGate, Decision
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.tokens import TokenSigner

from .conftest import CHROME, SECRET_KEY

SID = "SM" + "ab" * 16
FORM = {"content-type": "application/x-www-form-urlencoded", "user-agent": CHROME}
BROWSER = {"user-agent": CHROME}


@pytest.fixture
def offline() -> Settings:
    """Settings for a tracker that never reaches Twilio (records are bound by hand)."""
    return Settings(
        account_sid="AC" + "0" * 32,
        auth_token="token",
        secret_key=SECRET_KEY,
        store=MemoryStore(),
        api_base_url="http://127.0.0.1:9",
    )


@pytest.fixture
def tracker(offline: Settings) -> Iterator[FeedbackTracker]:
    tracker = FeedbackTracker(offline)
    yield tracker
    tracker.close(timeout=0)  # confirmed records would wait for a Twilio that is not there


@pytest.fixture
def gate(tracker: FeedbackTracker) -> ConfirmGate:
    return ConfirmGate(tracker)


def bound(tracker: FeedbackTracker) -> Ticket:
    ticket = tracker.ticket()
    tracker.bind(ticket, SID)
    return ticket


def make_gate(settings: Settings, **kwargs: Any) -> ConfirmGate:
    changes = {k: v for k, v in kwargs.items() if k not in ("paths", "bots")}
    tracker = FeedbackTracker(settings.replace(**changes))
    tracker.close()
    options = {k: v for k, v in kwargs.items() if k in ("paths", "bots")}
    return ConfirmGate(tracker, **options)


# -- paths ---------------------------------------------------------------------------


def test_exact_paths(gate: ConfirmGate) -> None:
    assert "/confirm" in gate.paths
    assert "/confirm/" not in gate.paths
    assert "/confirmx" not in gate.paths
    assert "/" not in gate.paths
    assert isinstance(gate.paths, frozenset)


def test_prefix_paths(offline: Settings) -> None:
    gate = make_gate(offline, confirm_paths=("/c/", "/v/"), path_match="prefix")
    assert "/c/abc" in gate.paths
    assert "/v/" in gate.paths
    assert "/cabc" not in gate.paths
    assert None not in gate.paths


def test_pattern_paths_match_the_whole_path(offline: Settings) -> None:
    gate = make_gate(offline, paths=re.compile(r"/(en|fr)/confirm"))
    assert "/fr/confirm" in gate.paths
    assert "/fr/confirm/x" not in gate.paths
    assert "/confirm" not in gate.paths
    assert None not in gate.paths


# -- screening -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"])
def test_methods_that_do_not_confirm(
    tracker: FeedbackTracker, gate: ConfirmGate, method: str
) -> None:
    ticket = bound(tracker)
    decision = gate.decide(method, f"id={ticket.token}", BROWSER)
    assert decision.result == ConfirmResult("ignored", reason="method does not confirm")
    assert gate.decide("GET", f"id={ticket.token}", BROWSER).result.status == "confirmed"


def test_head_and_options_never_confirm_even_if_configured(offline: Settings) -> None:
    gate = make_gate(offline, confirm_methods=("GET", "HEAD", "OPTIONS"))
    assert gate.methods == frozenset({"GET"})
    assert gate.decide("HEAD", "id=x", BROWSER).result.status == "ignored"


def test_post_only(offline: Settings) -> None:
    gate = make_gate(offline, confirm_methods=("POST",))
    assert gate.decide("GET", "id=x", BROWSER).result.status == "ignored"
    assert gate.decide("POST", "id=x", BROWSER).result.status == "invalid"


def test_bots_are_ignored_before_the_token_is_looked_at(
    tracker: FeedbackTracker, gate: ConfirmGate
) -> None:
    ticket = bound(tracker)
    for agent in ("TelegramBot (like TwitterBot)", "", "WhatsApp/2.23.20.0 A"):
        decision = gate.decide("GET", f"id={ticket.token}", {"user-agent": agent})
        assert decision.result == ConfirmResult("ignored", reason="link preview or scanner")
    assert gate.decide("GET", f"id={ticket.token}", {}).result.status == "ignored"
    assert gate.decide("GET", f"id={ticket.token}", BROWSER).result.status == "confirmed"


@pytest.mark.parametrize(
    "agent", [None, "testclient", "Werkzeug/3.1.3", "Quart", "python-httpx/0.28.1", "curl/8.5.0"]
)
def test_test_clients_confirm_only_when_counted(offline: Settings, agent: str | None) -> None:
    headers = {} if agent is None else {"user-agent": agent}
    gate = make_gate(offline)
    counting = make_gate(offline, count_test_clients=True)
    assert offline.count_test_clients is False
    assert gate.decide("GET", "id=x", headers).result.status == "ignored"
    assert counting.decide("GET", "id=x", headers).result.status == "invalid"
    form = {**headers, "content-type": FORM["content-type"], "content-length": "4"}
    assert gate.form_length("POST", "", form) == 0
    assert counting.form_length("POST", "", form) == 4
    assert counting.decide("GET", "id=x", {"user-agent": "WhatsApp/2"}).result.status == "ignored"


def test_own_bot_patterns(offline: Settings) -> None:
    gate = make_gate(offline, bot_user_agents=("AcmeLinkCheck",))
    assert gate.decide("GET", "id=x", {"user-agent": "acmelinkcheck/1"}).result.status == (
        "ignored"
    )
    replaced = make_gate(offline, bots=BotMatcher([]))
    assert replaced.decide("GET", "id=x", {"user-agent": "curl/8"}).result.status == "invalid"


# -- tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "token"),
    [
        ("id=abc", "abc"),
        ("a=1&id=abc&id=def", "abc"),
        ("a=1", None),
        ("", None),
        ("id", None),
        ("id=", None),
        ("id=&a=1", None),
        ("id=&id&id=abc&id=def", "abc"),
        ("i%64=abc", "abc"),
        ("id=a%2Bb", "a+b"),
        ("id=a+b", "a b"),
        ("&&&=&id", None),
        ("xid=1&idx=2", None),
        ("id=%FF%FE", "\ufffd\ufffd"),
    ],
)
def test_token_from_query(gate: ConfirmGate, query: str, token: str | None) -> None:
    assert gate.token_from_query(query) == token


def test_token_from_form(gate: ConfirmGate) -> None:
    assert gate.token_from_form(b"x=1&id=tok&id=other") == "tok"
    assert gate.token_from_form(b"x=1") is None
    assert gate.token_from_form(b"") is None
    assert gate.token_from_form("id=\u00e9".encode()) == "\u00e9"
    assert gate.token_from_form(b"id=\xff") == "\ufffd"
    assert gate.token_from_form(b"id=&id=tok") == "tok"
    assert gate.token_from_form(b"id=") is None


def test_too_many_fields_are_not_searched(gate: ConfirmGate) -> None:
    fields = [f"f{n}=1" for n in range(MAX_FIELDS - 1)]
    assert gate.token_from_query("&".join([*fields, "id=tok"])) == "tok"
    assert gate.token_from_form("&".join([*fields, "id=tok"]).encode()) == "tok"
    assert gate.token_from_query("&".join(["id=tok", *fields, "x=1"])) is None
    assert gate.token_from_form("&".join(["id=tok", *fields, "x=1"]).encode()) is None


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(["id", "i%64", "x", "", "id "]), st.text(max_size=8)),
        max_size=6,
    ),
    plus=st.booleans(),
)
def test_one_rule_for_query_and_form(pairs: list[tuple[str, str]], plus: bool) -> None:
    """The first non-empty value of the parameter, in the query as in the form."""
    gate = _shared_gate()
    text = "&".join(
        f"{name}={quote_plus(value) if plus else quote(value)}" for name, value in pairs
    )
    expected = next(
        (v for k, v in parse_qsl(text, keep_blank_values=True) if k == "id" and v), None
    )
    assert gate.token_from_query(text) == expected
    assert gate.token_from_form(text.encode()) == expected


def test_form_length(offline: Settings, gate: ConfirmGate) -> None:
    form = {**FORM, "content-length": "10"}
    assert gate.form_length("POST", "", form) == 10
    assert gate.form_length("POST", "", {**form, "content-type": FORM["content-type"] + "; a=b"})
    assert gate.form_length("POST", "a=1", form) == 10
    assert gate.form_length("POST", "id=x", form) == 0  # the query has it
    assert gate.form_length("GET", "", form) == 0
    assert gate.form_length("PUT", "", form) == 0
    assert gate.form_length("POST", "", {**form, "content-type": "application/json"}) == 0
    assert gate.form_length("POST", "", {**form, "content-type": "multipart/form-data"}) == 0
    assert gate.form_length("POST", "", {**form, "user-agent": "curl/8.4.0"}) == 0
    assert gate.form_length("POST", "", {**form, "content-length": ""}) == 0
    assert gate.form_length("POST", "", {**form, "content-length": "0"}) == 0
    assert gate.form_length("POST", "", {**form, "content-length": "-1"}) == 0
    assert gate.form_length("POST", "", {**form, "content-length": "\u00b2"}) == 0
    assert gate.form_length("POST", "", {**form, "content-length": "9" * 5000}) == 0
    assert gate.form_length("POST", "", {**form, "content-length": "0" * 5000 + "10"}) == 10
    assert gate.form_length("POST", "", {**form, "content-length": str(MAX_FORM_BYTES)})
    too_long = {**form, "content-length": str(MAX_FORM_BYTES + 1)}
    assert gate.form_length("POST", "", too_long) == 0
    assert make_gate(offline, confirm_methods=("GET",)).form_length("POST", "", form) == 0


# -- confirming ------------------------------------------------------------------------


def test_confirm_then_duplicate(tracker: FeedbackTracker, gate: ConfirmGate) -> None:
    ticket = bound(tracker)
    first = gate.decide("GET", f"a=1&id={ticket.token}", BROWSER)
    assert first == Decision(
        ConfirmResult("confirmed", ticket.tracking_id, SID), f"a=1&id={ticket.token}"
    )
    again = gate.decide("GET", f"id={ticket.token}", BROWSER)
    assert again.result == ConfirmResult("duplicate", ticket.tracking_id, SID)
    assert again.redirect is None


def test_confirm_from_the_form_body(tracker: FeedbackTracker, gate: ConfirmGate) -> None:
    ticket = bound(tracker)
    body = f"id={ticket.token}".encode()
    assert gate.decide("POST", "", FORM, body).result.status == "confirmed"


def test_an_empty_query_parameter_defers_to_the_form(
    tracker: FeedbackTracker, gate: ConfirmGate
) -> None:
    ticket = bound(tracker)
    form = {**FORM, "content-length": "50"}
    assert gate.form_length("POST", "id=", form) == 50
    assert gate.form_length("POST", "id=&id", form) == 50
    body = f"id=&id={ticket.token}".encode()
    assert gate.decide("POST", "id=&x=1", FORM, body).result.status == "confirmed"
    # A non-empty query value wins, even when it is not a valid token.
    other = bound(tracker)
    assert gate.form_length("POST", "id=bogus", form) == 0
    assert gate.decide("POST", "id=bogus", FORM, f"id={other.token}".encode()).result.status == (
        "invalid"
    )


def test_a_form_with_too_many_fields_is_invalid_and_quiet(
    gate: ConfirmGate, caplog: pytest.LogCaptureFixture
) -> None:
    body = "&".join(f"f{n}=1" for n in range(5000)).encode()
    with caplog.at_level(logging.DEBUG, logger="twilio_feedback"):
        for _ in range(3):
            decision = gate.decide("POST", "", FORM, body)
            assert decision.result.status == "invalid"
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []
    assert any("fields" in r.getMessage() for r in caplog.records)


async def test_async_twin(tracker: FeedbackTracker, gate: ConfirmGate) -> None:
    ticket = bound(tracker)
    assert (await gate.decide_async("GET", f"id={ticket.token}", BROWSER)).result.confirmed
    assert (await gate.decide_async("GET", f"id={ticket.token}", BROWSER)).result.status == (
        "duplicate"
    )
    assert (await gate.decide_async("HEAD", "", BROWSER)).result.status == "ignored"
    body = f"id={bound(tracker).token}".encode()
    assert (await gate.decide_async("POST", "", FORM, body)).result.confirmed


def test_bad_tokens(tracker: FeedbackTracker, gate: ConfirmGate) -> None:
    ticket = bound(tracker)
    tampered = ticket.token[:-1] + ("A" if ticket.token[-1] != "A" else "B")
    old = TokenSigner(SECRET_KEY, timer=lambda: time.time() - 30 * 86400).issue()[1]
    unbound = tracker.ticket().token
    cases = {
        "": "invalid",
        "id=": "invalid",
        "id=" + "A" * 32: "invalid",
        "id=" + tampered: "invalid",
        "id=" + old: "expired",
        "id=" + unbound: "unknown",
        "id=" + "z" * 100_000: "invalid",
        "id=%00%FF" * 1000: "invalid",
    }
    for query, status in cases.items():
        assert gate.decide("GET", query, BROWSER).result.status == status, query
    assert tracker.store.get(ticket.tracking_id).state.value == "pending"  # type: ignore[union-attr]


def test_store_down_is_an_error_result(offline: Settings) -> None:
    class Down(MemoryStore):
        def confirm(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("down")

    with FeedbackTracker(offline.replace(store=Down())) as tracker:
        gate = ConfirmGate(tracker)
        token = tracker.ticket().token
        # A genuine token: kept in memory until the store answers again.
        assert gate.decide("GET", f"id={token}", BROWSER).result.status == "deferred"


def test_an_unexpected_failure_is_logged_not_raised(
    gate: ConfirmGate, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(token: str | None) -> ConfirmResult:
        raise RuntimeError("bug")

    monkeypatch.setattr(gate.confirmer, "confirm_token", explode)
    decision = gate.decide("GET", "id=x", BROWSER)
    assert decision.result == ConfirmResult("error", reason="internal error")
    assert "confirming a request failed" in caplog.text


async def test_an_unexpected_failure_is_logged_not_raised_async(
    gate: ConfirmGate, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(token: str | None) -> ConfirmResult:
        raise RuntimeError("bug")

    monkeypatch.setattr(gate.confirmer, "confirm_token_async", explode)
    assert (await gate.decide_async("GET", "id=x", BROWSER)).result.status == "error"


@settings(max_examples=300, deadline=None)
@given(query=st.text(max_size=300), agent=st.text(max_size=50), body=st.binary(max_size=200))
def test_arbitrary_input_never_raises_and_never_confirms(
    query: str, agent: str, body: bytes
) -> None:
    gate = _shared_gate()
    for method in ("GET", "POST"):
        decision = gate.decide(method, query, {"user-agent": agent}, body)
        assert decision.result.status in ("ignored", "invalid")


_GATE: list[ConfirmGate] = []


def _shared_gate() -> ConfirmGate:
    if not _GATE:
        tracker = FeedbackTracker(
            Settings(
                account_sid="AC" + "0" * 32,
                auth_token="token",
                secret_key=SECRET_KEY,
                store=MemoryStore(),
                api_base_url="http://127.0.0.1:9",
            )
        )
        tracker.close()
        _GATE.append(ConfirmGate(tracker))
    return _GATE[0]


# -- answering -------------------------------------------------------------------------


def test_strip_token(gate: ConfirmGate) -> None:
    assert gate.strip_token("a=1&id=x&b=2") == "a=1&b=2"
    assert gate.strip_token("id=x") == ""
    assert gate.strip_token("i%64=x&b=%20") == "b=%20"
    assert gate.strip_token("a=1") == "a=1"
    assert gate.strip_token("id=1&id=2&idx=3") == "idx=3"
    assert gate.strip_token("") == ""


def test_strip_token_from_uri(gate: ConfirmGate) -> None:
    assert gate.strip_token_from_uri("/confirm?id=x&a=1") == "/confirm?a=1"
    assert gate.strip_token_from_uri("/confirm?id=x") == "/confirm"
    assert gate.strip_token_from_uri("/confirm") == "/confirm"


def test_hide_token(offline: Settings) -> None:
    gate = make_gate(offline, hide_token=True)
    assert gate.decide("GET", "a=1&id=x", BROWSER).query == "a=1"
    assert gate.decide("HEAD", "a=1&id=x", BROWSER).query == "a=1"
    assert gate.decide("GET", "a=1&id=x", {"user-agent": "curl/8"}).query == "a=1"


def test_no_redirect_unless_configured(gate: ConfirmGate) -> None:
    for status in ("confirmed", "duplicate", "ignored", "invalid", "expired", "unknown", "error"):
        assert gate.redirect_for(ConfirmResult(status)) is None


def test_redirects_come_only_from_settings(offline: Settings) -> None:
    gate = make_gate(offline, confirmed_redirect="/ok", invalid_redirect="/bad")
    expected = {
        "confirmed": "/ok",
        "duplicate": "/ok",
        "deferred": "/ok",  # the click counts; the store takes it once it is back
        "ignored": "/ok",
        "invalid": "/bad",
        "unknown": "/bad",
        "error": "/bad",
        "expired": "/bad",
    }
    for status, target in expected.items():
        assert gate.redirect_for(ConfirmResult(status)) == target  # type: ignore[arg-type]
    assert gate.redirect_for(ConfirmResult("confirmed"), "OPTIONS") is None
    decision = gate.decide("GET", "id=x&next=https://evil.example", BROWSER)
    assert decision.redirect == "/bad"
    assert (decision.status, decision.headers) == (
        303,
        (
            ("location", "/bad"),
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
            ("content-type", "text/plain"),
            ("content-length", "0"),
        ),
    )


def test_redirect_fallbacks(offline: Settings) -> None:
    only = make_gate(offline, confirmed_redirect="https://app.example/ok")
    assert only.redirect_for(ConfirmResult("invalid")) == "https://app.example/ok"
    assert only.redirect_for(ConfirmResult("expired")) == "https://app.example/ok"
    expired = make_gate(offline, confirmed_redirect="/ok", expired_redirect="/old")
    assert expired.redirect_for(ConfirmResult("expired")) == "/old"
    assert expired.redirect_for(ConfirmResult("unknown")) == "/ok"
