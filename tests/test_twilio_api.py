"""Twilio I/O over real HTTP to FakeTwilio: failure classification, Retry-After, answer
size and time bounds."""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import os
import signal
import time
import tracemalloc
import warnings
from urllib.parse import urlsplit

import pytest
import requests
from twilio.rest import Client

from twilio_feedback import FeedbackError, FeedbackTracker, Settings
from twilio_feedback.testing import Drop, FakeTwilio, Hang, RawAnswer, Status, Trickle
from twilio_feedback.twilio_api import (
    MAX_RESPONSE_BYTES,
    TwilioAPI,
    classify,
    parse_retry_after,
)

from .servers import free_port


def _problem(status: int) -> bytes:
    """An RFC 9457 error body, as newer Twilio APIs send."""
    problem = {"type": "https://x.example/e", "title": "t", "status": status, "code": 20000}
    return json.dumps(problem).encode()


@pytest.fixture
def api(settings: Settings) -> TwilioAPI:
    return TwilioAPI(settings.replace(request_timeout=0.5))


@pytest.fixture
def sid(api: TwilioAPI) -> str:
    return str(api.send_message(to="+15558675310", from_="+15017122661", body="x").sid)


def _post(api: TwilioAPI, fake: FakeTwilio, sid: str) -> FeedbackError:
    with pytest.raises(FeedbackError) as info:
        api.post_feedback(fake.account_sid, sid)
    return info.value


def test_success_and_provide_feedback(api: TwilioAPI, fake_twilio: FakeTwilio, sid: str) -> None:
    assert fake_twilio.messages[0].provide_feedback
    api.post_feedback(fake_twilio.account_sid, sid)
    assert fake_twilio.feedback[0].outcome == "confirmed"


@pytest.mark.parametrize(
    ("fault", "retryable", "status", "code", "retry_after"),
    [
        (503, True, 503, 20503, None),
        (500, True, 500, 20500, None),
        (408, True, 408, 20408, None),
        (Status(429, retry_after=2), True, 429, 20429, 2.0),
        (Status(400, code=21610), False, 400, 21610, None),
        (403, True, 403, 20003, None),
        (401, True, 401, 20003, None),
    ],
)
def test_classification(
    api: TwilioAPI,
    fake_twilio: FakeTwilio,
    sid: str,
    fault: int | Status,
    retryable: bool,
    status: int,
    code: int,
    retry_after: float | None,
) -> None:
    fake_twilio.fail_next(fault)
    error = _post(api, fake_twilio, sid)
    assert (error.retryable, error.status, error.code, error.retry_after) == (
        retryable,
        status,
        code,
        retry_after,
    )


def test_unknown_message_is_permanent_with_code(api: TwilioAPI, fake_twilio: FakeTwilio) -> None:
    error = _post(api, fake_twilio, "SM" + "0" * 32)
    assert (error.retryable, error.status, error.code) == (False, 404, 20404)


def test_dropped_connection_is_retryable(api: TwilioAPI, fake_twilio: FakeTwilio, sid: str) -> None:
    fake_twilio.fail_next(Drop())
    error = _post(api, fake_twilio, sid)
    assert error.retryable
    assert error.status is None


@pytest.mark.timeout(30)
def test_hanging_twilio_times_out(api: TwilioAPI, fake_twilio: FakeTwilio, sid: str) -> None:
    fake_twilio.fail_next(Hang())
    started = time.monotonic()
    error = _post(api, fake_twilio, sid)
    assert error.retryable
    assert time.monotonic() - started < 3


def test_secrets_not_in_errors(settings: Settings, fake_twilio: FakeTwilio) -> None:
    bad = TwilioAPI(settings.replace(auth_token="wrong-token-value-wrong-token"))
    with pytest.raises(FeedbackError) as info:
        bad.post_feedback(fake_twilio.account_sid, "SM" + "0" * 32)
    assert info.value.status == 401
    assert info.value.credentials
    assert info.value.retryable
    assert "wrong-token-value" not in str(info.value) + repr(info.value)


def test_classify_unexpected() -> None:
    assert classify(RuntimeError("boom")).retryable


def test_edge_and_region_cannot_rewrite_a_custom_base_url(
    settings: Settings, fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    api = TwilioAPI(settings)
    sid = str(api.send_message(to="+15558675310", from_="+15017122661", body="x").sid)
    api.post_feedback(fake_twilio.account_sid, sid)
    assert len(fake_twilio.feedback) == 1


# -- Retry-After: None or a finite number of seconds >= 0 --------------------------------


def _http_date(offset: float) -> str:
    return email.utils.formatdate(time.time() + offset, usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("2", 2.0),
        (" 7 ", 7.0),
        ("2.5", 2.5),
        ("-1", None),
        ("-0.5", None),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-inf", None),
        ("1e400", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date in the past
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_reads_http_dates() -> None:
    seconds = parse_retry_after(_http_date(120))
    assert seconds is not None
    assert 115 <= seconds <= 121
    assert parse_retry_after(_http_date(-120)) == 0.0


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (0, 0.0),
        (3, 3.0),
        (-1, None),
        (float("nan"), None),
        (float("inf"), None),
        ("garbage", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
)
def test_retry_after_end_to_end(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str, sent: float | str, expected: float | None
) -> None:
    fake_twilio.fail_next(Status(429, retry_after=sent))
    error = _post(api, fake_twilio, sid)
    assert (error.status, error.retryable, error.retry_after) == (429, True, expected)


def test_retry_after_http_date_end_to_end(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str
) -> None:
    fake_twilio.fail_next(Status(503, retry_after=_http_date(60)))
    error = _post(api, fake_twilio, sid)
    assert error.retry_after is not None
    assert 55 <= error.retry_after <= 61


# -- answers: size cap, the HTTP status decides, a whole-call deadline --------------------


def test_oversized_2xx_answer_is_success_in_bounded_memory(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str
) -> None:
    api.client()  # built outside the measurement
    fake_twilio.fail_next(RawAnswer(200, b"x" * 65536, repeat=1024))  # 64 MiB
    tracemalloc.start()
    try:
        api.post_feedback(fake_twilio.account_sid, sid)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MAX_RESPONSE_BYTES


def test_oversized_error_answer_is_classified_by_its_status(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str
) -> None:
    fake_twilio.fail_next(RawAnswer(502, b"x" * 65536, repeat=64), RawAnswer(400, b"y" * (2 << 20)))
    first = _post(api, fake_twilio, sid)
    assert (first.status, first.retryable) == (502, True)
    second = _post(api, fake_twilio, sid)
    assert (second.status, second.retryable) == (400, False)
    api.post_feedback(fake_twilio.account_sid, sid)  # the connection pool still works
    assert len(fake_twilio.feedback) == 1


@pytest.mark.parametrize(
    "answer",
    [
        RawAnswer(200, b"<html>Accepted</html>", content_type="text/html"),
        RawAnswer(201, b""),
        RawAnswer(204, b""),
        RawAnswer(200, b'{"status": 500, "code": 20500, "message": "not really"}'),
        RawAnswer(200, b"[1, 2"),
    ],
    ids=["html", "empty-201", "204", "status-field-500", "truncated-json"],
)
def test_any_2xx_is_success_whatever_the_body(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str, answer: RawAnswer
) -> None:
    fake_twilio.fail_next(answer)
    api.post_feedback(fake_twilio.account_sid, sid)


@pytest.mark.parametrize(
    ("answer", "status", "retryable"),
    [
        # RFC 9457 bodies: the official client takes `status` from the body.
        (RawAnswer(503, _problem(400)), 503, True),
        (RawAnswer(400, _problem(503)), 400, False),
        # Legacy bodies.
        (RawAnswer(500, b'{"code": 21610, "message": "x", "status": 400}'), 500, True),
        (RawAnswer(404, b'{"code": 20404, "message": "x", "status": 200}'), 404, False),
        (RawAnswer(503, b"<html>Service Unavailable</html>"), 503, True),
    ],
)
def test_the_http_status_decides_not_the_body(
    api: TwilioAPI,
    fake_twilio: FakeTwilio,
    sid: str,
    answer: RawAnswer,
    status: int,
    retryable: bool,
) -> None:
    fake_twilio.fail_next(answer)
    error = _post(api, fake_twilio, sid)
    assert (error.status, error.retryable) == (status, retryable)


@pytest.mark.timeout(30)
def test_a_trickling_answer_is_a_retryable_network_error(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str
) -> None:
    fake_twilio.fail_next(Trickle(interval=0.05))
    started = time.monotonic()
    error = _post(api, fake_twilio, sid)
    elapsed = time.monotonic() - started
    assert (error.retryable, error.status) == (True, None)
    assert "network error" in error.message
    # request_timeout is 0.5 s: the whole answer is due within 2 x request_timeout.
    assert elapsed < 3.0
    api.post_feedback(fake_twilio.account_sid, sid)
    assert len(fake_twilio.feedback) == 1


@pytest.mark.timeout(30)
def test_a_trickling_create_times_out(api: TwilioAPI, fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(Trickle(interval=0.05), endpoint="messages")
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        api.send_message(to="+15558675310", from_="+15017122661", body="x")
    assert time.monotonic() - started < 3.0


@pytest.mark.timeout(60)
def test_delivery_goes_on_through_a_trickling_twilio(
    settings: Settings, fake_twilio: FakeTwilio
) -> None:
    with FeedbackTracker(settings.replace(request_timeout=0.5)) as tracker:
        tracker.send(to="+15558675310", from_="+15017122661", body="code", key="trickle")
        fake_twilio.fail_next(Trickle(interval=0.05), Trickle(interval=0.05))
        assert tracker.confirm(key="trickle").confirmed
        fake_twilio.wait_for_feedback(1, timeout=20)
        assert tracker.stats()["stuck"] == 0


# -- the lean feedback post: the official client's answers, at a fifth of its CPU ----------


def _official(settings: Settings, base_url: str | None = None) -> TwilioAPI:
    """A TwilioAPI that posts through an app's own official client (its request path)."""
    client = Client(settings.account_sid, settings.auth_token)
    client.api.base_url = (base_url or settings.api_base_url).rstrip("/")
    return TwilioAPI(settings.replace(request_timeout=0.5), client=client)


def _outcome(api: TwilioAPI, account_sid: str, sid: str) -> tuple[object, ...] | None:
    try:
        api.post_feedback(account_sid, sid)
    except FeedbackError as error:
        return (
            error.message,
            error.status,
            error.code,
            error.retryable,
            error.credentials,
            error.retry_after,
        )
    return None


@pytest.mark.parametrize(
    "fault",
    [
        None,
        RawAnswer(201, b""),
        RawAnswer(204, b""),
        RawAnswer(200, b"<html>Accepted</html>", content_type="text/html"),
        Status(400, code=21610, message="unsubscribed"),
        Status(401),
        Status(403),
        Status(404),
        Status(408),
        Status(409),
        Status(429, retry_after=2),
        Status(429, retry_after="soon"),
        Status(500),
        Status(502),
        Status(503, retry_after=7),
        RawAnswer(503, b"<html>Service Unavailable</html>"),
        RawAnswer(503, _problem(400)),
        RawAnswer(400, _problem(503)),
        RawAnswer(404, b'{"code": 20404, "message": "x", "status": 200}'),
        RawAnswer(302, b""),
        Drop(),
    ],
    ids=repr,
)
def test_the_lean_post_answers_as_the_official_client(
    api: TwilioAPI, settings: Settings, fake_twilio: FakeTwilio, sid: str, fault: object
) -> None:
    """Same success, same error (message, status, code, retryable, credentials,
    Retry-After) for every class of answer, whichever way the post goes."""
    official = _official(settings)
    outcomes = []
    for way in (api, official):
        if fault is not None:
            fake_twilio.fail_next(fault)  # type: ignore[arg-type]
        outcomes.append(_outcome(way, fake_twilio.account_sid, sid))
    assert outcomes[0] == outcomes[1]
    posts = [r for r in fake_twilio.requests if r.path.endswith("/Feedback.json")]
    assert len(posts) == 2
    assert posts[0].path == posts[1].path
    assert posts[0].form == posts[1].form == {"Outcome": "confirmed"}
    assert posts[0].headers["user-agent"] == posts[1].headers["user-agent"]


def test_the_lean_post_when_nothing_listens(settings: Settings, fake_twilio: FakeTwilio) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    lean = TwilioAPI(settings.replace(api_base_url=closed, request_timeout=0.5))
    outcome = _outcome(lean, fake_twilio.account_sid, "SM" + "0" * 32)
    assert outcome == ("network error: ConnectionError", None, None, True, False, None)
    assert outcome == _outcome(
        _official(settings, closed), fake_twilio.account_sid, "SM" + "0" * 32
    )


@pytest.mark.timeout(30)
def test_the_lean_post_times_out_then_posts_again(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str
) -> None:
    fake_twilio.fail_next(Hang())
    started = time.monotonic()
    assert _outcome(api, fake_twilio.account_sid, sid) == (
        "network error: ReadTimeout",
        None,
        None,
        True,
        False,
        None,
    )
    assert time.monotonic() - started < 3
    fake_twilio.release()
    api.post_feedback(fake_twilio.account_sid, sid)  # a fresh connection from the pool
    fake_twilio.wait_for_feedback(1, timeout=5)


def test_the_lean_post_reopens_a_connection_twilio_closed_while_idle(
    settings: Settings,
) -> None:
    with FakeTwilio(port=free_port()) as fake:
        api = TwilioAPI(
            settings.replace(
                account_sid=fake.account_sid, auth_token=fake.auth_token, api_base_url=fake.base_url
            )
        )
        sid = str(api.send_message(to="+15558675310", from_="+15017122661", body="x").sid)
        api.post_feedback(fake.account_sid, sid)
        fake.stop()  # closes every connection, the idle keep-alive one included
        fake.start()  # same port
        api.post_feedback(fake.account_sid, sid)
        assert len(fake.wait_for_feedback(2)) == 2


def _local_ports(api: TwilioAPI) -> set[int]:
    """The local ports of the post's idle pooled connections (a white-box look)."""
    transport = api._poster._transport if api._poster else None
    idle = getattr(transport, "_idle", [])
    return {conn.sock.getsockname()[1] for conn in idle if conn.sock is not None}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_posts_over_connections_of_its_own(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str
) -> None:
    api.post_feedback(fake_twilio.account_sid, sid)
    parents = _local_ports(api)
    assert len(parents) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # the child: post, then leave without running pytest's teardown
        code = 1
        try:
            api.post_feedback(fake_twilio.account_sid, sid)
            code = 0 if _local_ports(api).isdisjoint(parents) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        fake_twilio.wait_for(lambda: False, timeout=0.02)
    assert os.waitstatus_to_exitcode(status[1]) == 0
    api.post_feedback(fake_twilio.account_sid, sid)  # the parent's connection still serves
    assert _local_ports(api) == parents
    assert len(fake_twilio.wait_for_feedback(3)) == 3


def test_the_lean_post_goes_through_the_environment_proxy(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP(S)_PROXY and NO_PROXY are honored as requests honors them: here the emulator
    is the proxy, and the base URL's host does not exist."""
    monkeypatch.setenv("HTTP_PROXY", fake_twilio.base_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    settings = api.settings.replace(api_base_url="http://api.twilio.invalid")
    TwilioAPI(settings).post_feedback(fake_twilio.account_sid, sid)
    assert fake_twilio.feedback[0].outcome == "confirmed"


def test_the_lean_post_keeps_secrets_out_of_errors_and_logs(
    api: TwilioAPI, fake_twilio: FakeTwilio, sid: str, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-token-value-wrong-token"
    bad = TwilioAPI(api.settings.replace(auth_token=wrong))
    secrets = [wrong, fake_twilio.auth_token]
    secrets += [
        base64.b64encode(f"{api.settings.account_sid}:{t}".encode()).decode() for t in secrets
    ]
    caplog.set_level(logging.DEBUG)
    errors = []
    fake_twilio.fail_next(Drop(), Status(500), RawAnswer(200, b"x" * 65536, repeat=20))
    for way in (api, api, api, api, bad):
        try:
            way.post_feedback(fake_twilio.account_sid, sid)
        except FeedbackError as error:
            errors.append(f"{error} {error!r} {error.message}")
    assert len(errors) == 3  # dropped, 500, 401; the oversized 200 was a success
    assert "Twilio answered 401" in errors[-1]
    assert any(r.name == "twilio_feedback.twilio" for r in caplog.records)
    logged = [f"{r.getMessage()} {r.args!r} {vars(r)!r} {r.exc_text or ''}" for r in caplog.records]
    for text in [*errors, *logged, repr(api), repr(bad)]:
        for secret in secrets:
            assert secret not in text


# -- find_message: ListMessage through the official client --------------------------------

PHONE, SENDER = "+15558675310", "+15017122661"


def test_find_message_follows_pages_and_matches(api: TwilioAPI, fake_twilio: FakeTwilio) -> None:
    since = time.time() - 1
    wanted = str(api.send_message(to=PHONE, from_=SENDER, body="open https://a.example/c?id=T").sid)
    exact = str(api.send_message(to=PHONE, from_=SENDER, body="Your code is 1").sid)
    fake_twilio.client().messages.create(to="+15550000000", from_=SENDER, body="Your code is 1")
    for i in range(120):  # the wanted ones are on the third page, newest first
        api.send_message(to=PHONE, from_=SENDER, body=f"filler {i}")
    account = fake_twilio.account_sid
    assert api.find_message(account_sid=account, to=PHONE, since=since, contains="id=T") == wanted
    found = api.find_message(account_sid=account, to=PHONE, since=since, body="Your code is 1")
    assert found == exact
    assert api.find_message(account_sid=account, to=PHONE, since=since, body="Your code") is None
    assert (
        api.find_message(
            account_sid=account, to=PHONE, from_="+15551111111", since=since, contains="id=T"
        )
        is None
    )
    later = time.time() + 5
    assert api.find_message(account_sid=account, to=PHONE, since=later, contains="id=T") is None
    pages = [r for r in fake_twilio.requests if r.method == "GET"]
    assert {r.query.get("To") for r in pages} == {PHONE}
    with pytest.raises(ValueError, match=r"body= .* or contains="):
        api.find_message(account_sid=account, to=PHONE, since=since)


def test_find_message_failures_are_classified(api: TwilioAPI, fake_twilio: FakeTwilio) -> None:
    account = fake_twilio.account_sid
    fake_twilio.fail_next(Status(429, retry_after=3), Status(400, code=21211), endpoint="list")
    with pytest.raises(FeedbackError) as info:
        api.find_message(account_sid=account, to=PHONE, since=0, body="x")
    assert (info.value.status, info.value.retryable, info.value.retry_after) == (429, True, 3.0)
    assert info.value.code == 20429
    with pytest.raises(FeedbackError) as info:
        api.find_message(account_sid=account, to=PHONE, since=0, body="x")
    assert (info.value.status, info.value.retryable, info.value.code) == (400, False, 21211)
    fake_twilio.fail_next(Drop(), endpoint="list")
    with pytest.raises(FeedbackError) as info:
        api.find_message(account_sid=account, to=PHONE, since=0, body="x")
    assert (info.value.status, info.value.retryable) == (None, True)


def test_the_lean_post_sends_the_official_clients_headers(
    api: TwilioAPI, settings: Settings, fake_twilio: FakeTwilio, sid: str
) -> None:
    """Built once and sent whole: the same headers as the official client, each once,
    and a Host naming the port (transport details aside: requests asks for gzip and says
    keep-alive; the lean post asks for the body as is, and HTTP/1.1 keeps alive)."""
    api.post_feedback(fake_twilio.account_sid, sid)
    _official(settings).post_feedback(fake_twilio.account_sid, sid)
    lean, official = (r.headers for r in fake_twilio.requests if r.path.endswith("/Feedback.json"))
    transport = {"accept-encoding", "connection"}
    assert {k: v for k, v in lean.items() if k not in transport} == {
        k: v for k, v in official.items() if k not in transport
    }
    assert lean["host"] == f"127.0.0.1:{urlsplit(fake_twilio.base_url).port}"
    assert lean["content-length"] == str(len("Outcome=confirmed"))
