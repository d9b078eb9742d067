"""FakeTwilio over real HTTP: the official twilio client, plain httpx, faults, the fixtures."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from twilio_feedback.testing import (
    Delay,
    Drop,
    FakeTwilio,
    Hang,
    RawAnswer,
    RecordedRequest,
    Status,
    Trickle,
    WaitTimeout,
)

PHONE, SENDER = "+15558675310", "+15017122661"
SID_RE = re.compile(r"(SM|MM)[0-9a-f]{32}")


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    """Runs requests that are meant to hang, off the test thread."""
    executor = ThreadPoolExecutor(max_workers=4)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)  # FakeTwilio.stop() ends the rest


def send(fake: FakeTwilio, **kwargs: Any) -> str:
    """Create a message with the official client; return its SID."""
    kwargs = {"to": PHONE, "from_": SENDER, "body": "hi", **kwargs}
    return str(fake.client().messages.create(**kwargs).sid)


def confirm(fake: FakeTwilio, sid: str, account: str | None = None) -> Any:
    """Post Outcome=confirmed with the official client, as the library does."""
    accounts = fake.client().api.v2010.accounts(account or fake.account_sid)
    return accounts.messages(sid).feedback.create(outcome="confirmed")


def messages_url(fake: FakeTwilio, account: str | None = None) -> str:
    return f"{fake.base_url}/2010-04-01/Accounts/{account or fake.account_sid}/Messages.json"


def feedback_url(fake: FakeTwilio, sid: str, account: str | None = None) -> str:
    account = account or fake.account_sid
    return f"{fake.base_url}/2010-04-01/Accounts/{account}/Messages/{sid}/Feedback.json"


def post(fake: FakeTwilio, url: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("auth", (fake.account_sid, fake.auth_token))
    kwargs.setdefault("timeout", 10)
    return httpx.post(url, data=data, **kwargs)


def post_confirmed(fake: FakeTwilio, sid: str) -> Callable[[], httpx.Response]:
    return lambda: post(fake, feedback_url(fake, sid), {"Outcome": "confirmed"}, timeout=20)


# -- the happy path ---------------------------------------------------------------------


def test_message_and_feedback_through_the_official_client(fake_twilio: FakeTwilio) -> None:
    message = fake_twilio.client().messages.create(
        to=PHONE, from_=SENDER, body="Open to confirm", provide_feedback=True
    )
    assert SID_RE.fullmatch(message.sid)
    assert (message.status, message.account_sid) == ("queued", fake_twilio.account_sid)
    [stored] = fake_twilio.messages
    assert (stored.sid, stored.to, stored.from_, stored.body) == (
        message.sid,
        PHONE,
        SENDER,
        "Open to confirm",
    )
    assert stored.provide_feedback is True
    assert stored.params["ProvideFeedback"] == "true"

    feedback = confirm(fake_twilio, message.sid)
    assert (feedback.message_sid, feedback.outcome) == (message.sid, "confirmed")
    [accepted] = fake_twilio.feedback
    assert (accepted.account_sid, accepted.message_sid) == (fake_twilio.account_sid, message.sid)
    assert accepted.outcome == "confirmed"
    last = fake_twilio.requests[-1]
    assert (last.method, last.status, last.form) == ("POST", 200, {"Outcome": "confirmed"})
    assert "authorization" not in last.headers


def test_message_json_follows_the_spec(fake_twilio: FakeTwilio) -> None:
    response = post(
        fake_twilio,
        messages_url(fake_twilio),
        {"To": PHONE, "From": SENDER, "Body": "x" * 161, "StatusCallback": "https://a.example"},
    )
    assert response.status_code == 201
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    sid, account = body["sid"], fake_twilio.account_sid
    assert body["num_segments"] == "2"
    assert body["num_media"] == "0"
    assert body["direction"] == "outbound-api"
    assert body["uri"] == f"/2010-04-01/Accounts/{account}/Messages/{sid}.json"
    assert body["subresource_uris"]["feedback"] == (
        f"/2010-04-01/Accounts/{account}/Messages/{sid}/Feedback.json"
    )
    assert body["date_created"].endswith("+0000")
    assert email.utils.parsedate_to_datetime(body["date_created"]).tzinfo is not None
    assert fake_twilio.messages[0].params["StatusCallback"] == "https://a.example"
    assert fake_twilio.messages[0].provide_feedback is False


def test_media_and_messaging_service(fake_twilio: FakeTwilio) -> None:
    service = "MG" + "a" * 32
    message = fake_twilio.client().messages.create(
        to=PHONE, messaging_service_sid=service, media_url=["https://a.example/1.png"]
    )
    assert message.sid.startswith("MM")
    assert message.num_media == "1"
    [stored] = fake_twilio.messages
    assert stored.media_urls == ("https://a.example/1.png",)
    assert (stored.from_, stored.messaging_service_sid) == (None, service)


@pytest.mark.fake_twilio(feedback_status=201)
def test_feedback_status_is_configurable(fake_twilio: FakeTwilio) -> None:
    assert confirm(fake_twilio, send(fake_twilio)).outcome == "confirmed"
    assert fake_twilio.requests[-1].status == 201


def test_client_ignores_twilio_edge_in_the_environment(
    fake_twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    send(fake_twilio)
    assert len(fake_twilio.messages) == 1


# -- validation, routing, auth ----------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "code", "message"),
    [
        ({"From": SENDER, "Body": "x"}, 21604, "A 'To' phone number is required."),
        ({"To": PHONE, "Body": "x"}, 21603, "A 'From' phone number is required."),
        ({"To": PHONE, "From": SENDER}, 21602, "Message body is required."),
    ],
)
def test_message_validation_errors(
    fake_twilio: FakeTwilio, form: dict[str, str], code: int, message: str
) -> None:
    response = post(fake_twilio, messages_url(fake_twilio), form)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": 400,
    }
    assert fake_twilio.messages == []


def test_content_sid_alone_is_a_body(fake_twilio: FakeTwilio) -> None:
    form = {"To": PHONE, "From": SENDER, "ContentSid": "HX" + "0" * 32}
    assert post(fake_twilio, messages_url(fake_twilio), form).status_code == 201


@pytest.mark.parametrize("outcome", ["", "received", "CONFIRMED", None])
def test_bad_outcome_is_400(fake_twilio: FakeTwilio, outcome: str | None) -> None:
    sid = send(fake_twilio)
    form = {} if outcome is None else {"Outcome": outcome}
    response = post(fake_twilio, feedback_url(fake_twilio, sid), form)
    assert response.status_code == 400
    assert response.json()["code"] == 20001
    assert fake_twilio.feedback == []


def test_unknown_message_is_404_through_the_official_client(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(TwilioRestException) as info:
        confirm(fake_twilio, "SM" + "0" * 32)
    assert (info.value.status, info.value.code) == (404, 20404)
    assert fake_twilio.feedback == []


def test_bad_paths_are_404(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    sub, _ = fake_twilio.add_account(parent=fake_twilio.account_sid)
    outcome = {"Outcome": "confirmed"}
    for url in [
        feedback_url(fake_twilio, "SMnot-a-sid"),
        feedback_url(fake_twilio, "XX" + "0" * 32),
        feedback_url(fake_twilio, sid, account="ACshort"),
        messages_url(fake_twilio, account="AC" + "z" * 32),
        feedback_url(fake_twilio, sid, account=sub),  # the message is not the subaccount's
        f"{fake_twilio.base_url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Calls.json",
        f"{fake_twilio.base_url}/nope",
    ]:
        response = post(fake_twilio, url, outcome)
        assert (response.status_code, response.json()["code"]) == (404, 20404), url
        assert response.json()["more_info"] == "https://www.twilio.com/docs/errors/20404"
    assert fake_twilio.feedback == []


def test_wrong_method_is_405(fake_twilio: FakeTwilio) -> None:
    auth = (fake_twilio.account_sid, fake_twilio.auth_token)
    response = httpx.delete(messages_url(fake_twilio), auth=auth)
    assert (response.status_code, response.json()["code"]) == (405, 20004)
    sid = send(fake_twilio)
    assert httpx.get(feedback_url(fake_twilio, sid), auth=auth).status_code == 405


@pytest.mark.parametrize(
    "auth",
    [None, ("AC" + "0" * 32, "token"), ("main", "wrong-token"), ("SK" + "0" * 32, "secret")],
    ids=["missing", "unknown-account", "wrong-token", "unknown-key"],
)
def test_bad_credentials_are_401(fake_twilio: FakeTwilio, auth: tuple[str, str] | None) -> None:
    if auth is not None and auth[0] == "main":
        auth = (fake_twilio.account_sid, auth[1])
    form = {"To": PHONE, "From": SENDER, "Body": "x"}
    response = httpx.post(messages_url(fake_twilio), data=form, auth=auth)
    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert fake_twilio.messages == []


def test_garbage_authorization_header_is_401(fake_twilio: FakeTwilio) -> None:
    for header in ["Basic !!!", "Bearer abc", "Basic"]:
        response = httpx.post(messages_url(fake_twilio), headers={"Authorization": header})
        assert response.status_code == 401, header


def test_unauthenticated_requests_are_401_before_routing(fake_twilio: FakeTwilio) -> None:
    assert httpx.post(f"{fake_twilio.base_url}/nope").status_code == 401


def test_official_client_with_a_wrong_token_gets_20003(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(TwilioRestException) as info:
        fake_twilio.client(password="wrong").messages.create(to=PHONE, from_=SENDER, body="x")
    assert (info.value.status, info.value.code) == (401, 20003)


def test_other_accounts_credentials_are_403(fake_twilio: FakeTwilio) -> None:
    other = fake_twilio.add_account()
    other_key = fake_twilio.add_api_key(other[0])
    form = {"To": PHONE, "From": SENDER, "Body": "x"}
    for auth in [other, other_key]:
        response = post(fake_twilio, messages_url(fake_twilio), form, auth=auth)
        assert (response.status_code, response.json()["code"]) == (403, 20003)


def test_api_key_of_the_account(fake_twilio: FakeTwilio) -> None:
    key_sid, secret = fake_twilio.add_api_key()
    assert re.fullmatch(r"SK[0-9a-f]{32}", key_sid)
    client = fake_twilio.client(
        username=key_sid, password=secret, account_sid=fake_twilio.account_sid
    )
    message = client.messages.create(to=PHONE, from_=SENDER, body="x")
    client.messages(message.sid).feedback.create(outcome="confirmed")
    assert fake_twilio.feedback[0].message_sid == message.sid
    wrong = post(fake_twilio, messages_url(fake_twilio), {}, auth=(key_sid, "wrong"))
    assert wrong.status_code == 401


def test_parent_credentials_act_on_subaccounts_not_the_reverse(fake_twilio: FakeTwilio) -> None:
    sub_sid, sub_token = fake_twilio.add_account(parent=fake_twilio.account_sid)
    parent_key = fake_twilio.add_api_key()
    client = fake_twilio.client()
    message = client.api.v2010.accounts(sub_sid).messages.create(to=PHONE, from_=SENDER, body="x")
    assert message.account_sid == sub_sid
    confirm(fake_twilio, message.sid, sub_sid)
    assert fake_twilio.feedback[0].account_sid == sub_sid
    form = {"To": PHONE, "From": SENDER, "Body": "x"}
    assert post(fake_twilio, messages_url(fake_twilio, sub_sid), form, auth=parent_key).is_success
    forbidden = post(fake_twilio, messages_url(fake_twilio), form, auth=(sub_sid, sub_token))
    assert forbidden.status_code == 403


def test_accounts_are_validated(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(ValueError, match="32 hex"):
        fake_twilio.add_account("ACnope")
    with pytest.raises(ValueError, match="unknown parent"):
        fake_twilio.add_account(parent="AC" + "0" * 32)
    with pytest.raises(ValueError, match="unknown account"):
        fake_twilio.add_api_key("AC" + "0" * 32)


def test_custom_credentials() -> None:
    sid, token = "AC" + "ab" * 16, "my-token"
    with FakeTwilio(sid, token) as fake:
        assert (fake.account_sid, fake.auth_token) == (sid, token)
        assert post(fake, messages_url(fake), {}, auth=(sid, token)).status_code == 400


# -- faults -----------------------------------------------------------------------------


def test_503_sequence_then_success(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(503, 503)
    for _ in range(2):
        with pytest.raises(TwilioRestException) as info:
            confirm(fake_twilio, sid)
        assert (info.value.status, info.value.code) == (503, 20503)
    confirm(fake_twilio, sid)
    statuses = [r.status for r in fake_twilio.requests if r.path.endswith("/Feedback.json")]
    assert statuses == [503, 503, 200]
    assert len(fake_twilio.feedback) == 1


def test_429_with_retry_after(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(Status(429, retry_after=1), Status(429, code=20429, retry_after=2.5))
    with pytest.raises(TwilioRestException) as info:
        confirm(fake_twilio, sid)
    assert (info.value.status, info.value.code) == (429, 20429)
    limited = post(fake_twilio, feedback_url(fake_twilio, sid), {"Outcome": "confirmed"})
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2.5"
    assert limited.json()["more_info"] == "https://www.twilio.com/docs/errors/20429"
    assert fake_twilio.feedback == []


def test_custom_status_code_and_message(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(Status(400, code=21610, message="Unsubscribed recipient"), 500)
    first = post(fake_twilio, feedback_url(fake_twilio, sid), {"Outcome": "confirmed"})
    assert first.json() == {
        "code": 21610,
        "message": "Unsubscribed recipient",
        "more_info": "https://www.twilio.com/docs/errors/21610",
        "status": 400,
    }
    second = post(fake_twilio, feedback_url(fake_twilio, sid), {"Outcome": "confirmed"})
    assert (second.status_code, second.json()["code"]) == (500, 20500)


def test_fail_always_until_cleared(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_always(503)
    for _ in range(3):
        with pytest.raises(TwilioRestException):
            confirm(fake_twilio, sid)
    send(fake_twilio)  # messages are not affected by a feedback fault
    fake_twilio.clear_faults()
    confirm(fake_twilio, sid)
    assert len(fake_twilio.feedback) == 1


def test_endpoint_selection(fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(503, endpoint="messages")
    with pytest.raises(TwilioRestException):
        send(fake_twilio)
    sid = send(fake_twilio)
    fake_twilio.fail_next(500, endpoint="any")
    with pytest.raises(TwilioRestException) as info:
        confirm(fake_twilio, sid)  # the shared queue goes to the first request, any endpoint
    assert info.value.status == 500
    send(fake_twilio)
    fake_twilio.fail_always(502, endpoint="any")
    with pytest.raises(TwilioRestException):
        send(fake_twilio)
    with pytest.raises(TwilioRestException):
        confirm(fake_twilio, sid)


def test_faults_are_validated(fake_twilio: FakeTwilio) -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        fake_twilio.fail_next(200)
    with pytest.raises(TypeError):
        fake_twilio.fail_next("503")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="endpoint"):
        fake_twilio.fail_always(503, endpoint="calls")  # type: ignore[arg-type]


def test_drop_is_a_connection_error(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(Drop(), Drop())
    with pytest.raises(requests.ConnectionError):
        confirm(fake_twilio, sid)
    with pytest.raises(httpx.TransportError):
        post(fake_twilio, feedback_url(fake_twilio, sid), {"Outcome": "confirmed"})
    assert [r.status for r in fake_twilio.requests[-2:]] == [None, None]
    assert fake_twilio.feedback == []
    confirm(fake_twilio, sid)  # the emulator serves on
    assert len(fake_twilio.feedback) == 1


@pytest.mark.timeout(30)
def test_hang_until_release(fake_twilio: FakeTwilio, pool: ThreadPoolExecutor) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(Hang())
    hanging: Future[httpx.Response] = pool.submit(post_confirmed(fake_twilio, sid))
    assert fake_twilio.wait_for(lambda: fake_twilio.in_flight == 1, 5)
    confirm(fake_twilio, sid)  # others are served meanwhile
    assert not hanging.done()
    fake_twilio.release()
    with pytest.raises(httpx.TransportError):
        hanging.result(timeout=5)
    assert fake_twilio.wait_for_requests(lambda r: r.status is None, timeout=5)
    assert len(fake_twilio.feedback) == 1  # the released one was not accepted


@pytest.mark.timeout(30)
def test_stop_releases_hanging_requests_promptly(pool: ThreadPoolExecutor) -> None:
    fake = FakeTwilio().start()
    sid = send(fake)
    fake.fail_always(Hang())
    hanging = [pool.submit(post_confirmed(fake, sid)) for _ in range(3)]
    assert fake.wait_for(lambda: fake.in_flight == 3, 5)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0
    for future in hanging:
        with pytest.raises(httpx.TransportError):
            future.result(timeout=5)
    assert fake.feedback == []
    assert fake.in_flight == 0


@pytest.mark.timeout(30)
def test_latency_and_delay(fake_twilio: FakeTwilio) -> None:
    fake_twilio.latency = 0.3
    started = time.monotonic()
    sid = send(fake_twilio)
    assert time.monotonic() - started >= 0.3
    fake_twilio.latency = 0
    fake_twilio.fail_next(Delay(0.2))
    started = time.monotonic()
    confirm(fake_twilio, sid)
    assert time.monotonic() - started >= 0.2
    assert len(fake_twilio.feedback) == 1  # a delayed request is answered normally


@pytest.mark.timeout(30)
def test_stop_cuts_latency_short(pool: ThreadPoolExecutor) -> None:
    fake = FakeTwilio().start()
    fake.latency = 60
    slow = pool.submit(lambda: post(fake, messages_url(fake), {}, timeout=20))
    assert fake.wait_for(lambda: fake.in_flight == 1, 5)
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 1.0
    with pytest.raises(httpx.TransportError):
        slow.result(timeout=5)


@pytest.mark.timeout(30)
def test_stop_closes_idle_keep_alive_connections() -> None:
    fake = FakeTwilio().start()
    with httpx.Client(auth=(fake.account_sid, fake.auth_token), timeout=5) as http:
        url = messages_url(fake)
        assert http.post(url, data={}).status_code == 400  # leaves a pooled connection
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(httpx.TransportError):
            http.post(url, data={})


# -- recordings, waiting, lifecycle -----------------------------------------------------


def test_wait_for_feedback_times_out_with_what_it_saw(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(503)
    with pytest.raises(TwilioRestException):
        confirm(fake_twilio, sid)
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"expected 1 feedback post.*Feedback\.json -> 503"):
        fake_twilio.wait_for_feedback(1, timeout=0.2)
    assert time.monotonic() - started < 2
    assert issubclass(WaitTimeout, AssertionError)
    assert issubclass(WaitTimeout, TimeoutError)


@pytest.mark.timeout(30)
def test_wait_for_feedback_wakes_on_arrival(
    fake_twilio: FakeTwilio, pool: ThreadPoolExecutor
) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(Delay(0.2))
    pool.submit(post_confirmed(fake_twilio, sid))
    [accepted] = fake_twilio.wait_for_feedback(1, timeout=10)
    assert accepted.message_sid == sid


def test_wait_for_requests(fake_twilio: FakeTwilio) -> None:
    send(fake_twilio)
    assert len(fake_twilio.wait_for_requests(1, timeout=1)) == 1

    def created(request: RecordedRequest) -> bool:
        return request.status == 201

    assert [r.status for r in fake_twilio.wait_for_requests(created, timeout=1)] == [201]
    with pytest.raises(WaitTimeout, match="2 matching request"):
        fake_twilio.wait_for_requests(2, timeout=0.1, where=created)


def test_reset_keeps_accounts_and_old_messages(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    key = fake_twilio.add_api_key()
    fake_twilio.fail_always(503)
    fake_twilio.latency = 5
    fake_twilio.reset()
    assert (fake_twilio.requests, fake_twilio.messages, fake_twilio.feedback) == ([], [], [])
    assert fake_twilio.latency == 0
    client = fake_twilio.client(username=key[0], password=key[1])
    client.api.v2010.accounts(fake_twilio.account_sid).messages(sid).feedback.create(
        outcome="unconfirmed"
    )
    assert fake_twilio.feedback[0].outcome == "unconfirmed"


def test_session_fixture_is_shared(fake_twilio_session: FakeTwilio) -> None:
    fake_twilio_session.reset()
    send(fake_twilio_session)
    assert len(fake_twilio_session.messages) == 1


def test_lifecycle() -> None:
    fake = FakeTwilio()
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.base_url
    assert "stopped" in repr(fake)
    with fake:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", fake.base_url)
        assert fake.start() is fake  # already running: no-op
    fake.stop()  # idempotent
    with pytest.raises(ValueError, match="2xx"):
        FakeTwilio(feedback_status=404)


def test_secrets_stay_out_of_reprs(fake_twilio: FakeTwilio) -> None:
    key_sid, secret = fake_twilio.add_api_key()
    fake_twilio.add_account(parent=fake_twilio.account_sid)
    shown = repr(fake_twilio) + repr(fake_twilio._accounts)
    assert fake_twilio.account_sid in repr(fake_twilio)
    assert secret not in shown
    assert all(a.token not in shown for a in fake_twilio._accounts.values())
    post(fake_twilio, messages_url(fake_twilio), {}, auth=(key_sid, secret))
    assert secret not in repr(fake_twilio.requests)


def test_seeded_messages_accept_feedback(fake_twilio: FakeTwilio) -> None:
    sids = fake_twilio.add_messages(3)
    assert len(set(sids)) == 3
    client = fake_twilio.client()
    client.api.v2010.accounts(fake_twilio.account_sid).messages(sids[1]).feedback.create(
        outcome="confirmed"
    )
    assert [p.message_sid for p in fake_twilio.feedback] == [sids[1]]


# -- ListMessage (GET .../Messages.json), as twilio-oai's twilio_api_v2010.json says ------

# The ListMessageResponse envelope and the Message properties of the spec.
LIST_ENVELOPE = {
    "end",
    "first_page_uri",
    "next_page_uri",
    "page",
    "page_size",
    "previous_page_uri",
    "start",
    "uri",
    "messages",
}
MESSAGE_PROPERTIES = {
    "account_sid",
    "api_version",
    "body",
    "date_created",
    "date_sent",
    "date_updated",
    "direction",
    "error_code",
    "error_message",
    "from",
    "messaging_service_sid",
    "num_media",
    "num_segments",
    "price",
    "price_unit",
    "sid",
    "status",
    "subresource_uris",
    "to",
    "uri",
}


def get(fake: FakeTwilio, params: dict[str, str], **kwargs: Any) -> httpx.Response:
    kwargs.setdefault("auth", (fake.account_sid, fake.auth_token))
    return httpx.get(messages_url(fake), params=params, timeout=10, **kwargs)


def test_list_envelope_and_filters_follow_the_spec(fake_twilio: FakeTwilio) -> None:
    first = send(fake_twilio, body="one")
    second = send(fake_twilio, body="two")
    send(fake_twilio, to="+15550000000", body="other recipient")
    send(fake_twilio, from_="+15551111111", body="other sender")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    response = get(fake_twilio, {"To": PHONE, "From": SENDER, "DateSent>": today})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == LIST_ENVELOPE
    assert [m["sid"] for m in body["messages"]] == [second, first]  # newest first
    assert (body["page"], body["page_size"], body["start"], body["end"]) == (0, 50, 0, 1)
    assert (body["next_page_uri"], body["previous_page_uri"]) == (None, None)
    account = fake_twilio.account_sid
    assert body["uri"].startswith(f"/2010-04-01/Accounts/{account}/Messages.json?To=%2B1555")
    assert "DateSent%3E=" + today in body["uri"]
    listed = body["messages"][0]
    assert set(listed) == MESSAGE_PROPERTIES
    assert (listed["to"], listed["from"], listed["body"]) == (PHONE, SENDER, "two")
    assert listed["status"] == "sent"
    assert email.utils.parsedate_to_datetime(listed["date_sent"]).tzinfo is not None
    recorded = fake_twilio.requests[-1]
    assert (recorded.method, recorded.status, recorded.query["To"]) == ("GET", 200, PHONE)


@pytest.mark.parametrize(
    ("name", "value", "found"),
    [
        ("DateSent", "today", True),
        ("DateSent", "2008-01-02", False),
        ("DateSent<", "2008-01-02", False),
        ("DateSent<", "tomorrow", True),
        ("DateSent>", "tomorrow", False),
        ("DateSent>", "2019-06-11 22:05:25.000", True),  # the spec's example formats
        ("DateSent>", "06/11/2019 22:05:25 MST", True),
        ("DateSent>", "Wed, 19 Jun 2019 22:04:00 -0000", True),
        ("DateSent>", "2019-06-11T22:05:25Z", True),  # what the official client sends
    ],
)
def test_list_date_filters(fake_twilio: FakeTwilio, name: str, value: str, found: bool) -> None:
    sid = send(fake_twilio)
    days = {"today": 0, "tomorrow": 1}
    if value in days:
        value = time.strftime("%Y-%m-%d", time.gmtime(time.time() + days[value] * 86400))
    messages = get(fake_twilio, {name: value}).json()["messages"]
    assert [m["sid"] for m in messages] == ([sid] if found else [])


def test_list_pages_through_the_official_client(fake_twilio: FakeTwilio) -> None:
    sids = [send(fake_twilio, body=f"m{i}") for i in range(5)]
    client = fake_twilio.client()
    listed = client.messages.list(to=PHONE, page_size=2)
    assert [m.sid for m in listed] == sids[::-1]
    assert listed[0].date_sent is not None
    pages = [r for r in fake_twilio.requests if r.method == "GET"]
    assert [r.query.get("Page") for r in pages] == [None, "1", "2"]
    assert pages[1].query["PageToken"] == "PA" + sids[3]
    page = client.messages.page(to=PHONE, page_size=2, page_number=1, page_token="PA" + sids[3])
    assert [m.sid for m in page] == [sids[2], sids[1]]
    assert page.previous_page() is not None


def test_list_bad_parameters_are_400(fake_twilio: FakeTwilio) -> None:
    for params in [
        {"PageSize": "0"},
        {"PageSize": "1001"},
        {"PageSize": "x"},
        {"Page": "-1"},
        {"DateSent>": "soon"},
        {"PageToken": "PAnope"},
    ]:
        response = get(fake_twilio, params)
        assert (response.status_code, response.json()["code"]) == (400, 20001), params
        assert set(response.json()) == {"code", "message", "more_info", "status"}


def test_list_is_per_account_and_authenticated(fake_twilio: FakeTwilio) -> None:
    send(fake_twilio)
    sub_sid, sub_token = fake_twilio.add_account(parent=fake_twilio.account_sid)
    sub_client = fake_twilio.client(username=sub_sid, password=sub_token)
    sub_client.messages.create(to=PHONE, from_=SENDER, body="sub")
    assert [m.body for m in sub_client.messages.list()] == ["sub"]
    parent = fake_twilio.client().api.v2010.accounts(sub_sid).messages.list()
    assert [m.body for m in parent] == ["sub"]  # a parent reads its subaccounts
    assert get(fake_twilio, {}, auth=None).status_code == 401
    assert get(fake_twilio, {}, auth=(sub_sid, sub_token)).status_code == 403


def test_list_faults_are_their_own_endpoint(fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(503, endpoint="list")
    sid = send(fake_twilio)  # a create does not take a list fault
    with pytest.raises(TwilioException, match="Unable to fetch page"):
        fake_twilio.client().messages.list()
    assert fake_twilio.requests[-1].status == 503
    assert [m.sid for m in fake_twilio.client().messages.list()] == [sid]


# -- faults after Twilio acted, slow and odd answers ------------------------------------


def test_drop_after_create_loses_the_answer_not_the_message(fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(Drop(after=True), endpoint="messages")
    with pytest.raises(requests.ConnectionError):
        send(fake_twilio, body="made anyway")
    [made] = fake_twilio.messages
    assert made.body == "made anyway"
    assert fake_twilio.requests[-1].status is None
    assert [m.sid for m in fake_twilio.client().messages.list(to=PHONE)] == [made.sid]


@pytest.mark.timeout(30)
def test_hang_after_create_times_out_the_client(fake_twilio: FakeTwilio) -> None:
    fake_twilio.fail_next(Hang(after=True), endpoint="messages")
    client = fake_twilio.client()
    client.http_client.timeout = 0.5
    with pytest.raises(requests.Timeout):
        client.messages.create(to=PHONE, from_=SENDER, body="x")
    assert len(fake_twilio.messages) == 1
    fake_twilio.release()
    assert fake_twilio.wait_for_requests(lambda r: r.status is None, timeout=5)


def test_drop_after_feedback_keeps_the_feedback(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(Drop(after=True))
    with pytest.raises(requests.ConnectionError):
        confirm(fake_twilio, sid)
    assert [f.message_sid for f in fake_twilio.feedback] == [sid]


@pytest.mark.timeout(30)
def test_trickle_sends_headers_then_a_byte_at_a_time(
    fake_twilio: FakeTwilio, pool: ThreadPoolExecutor
) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(Trickle(interval=0.05))
    with httpx.stream(
        "POST",
        feedback_url(fake_twilio, sid),
        data={"Outcome": "confirmed"},
        auth=(fake_twilio.account_sid, fake_twilio.auth_token),
        timeout=5,
    ) as response:
        assert response.status_code == 200
        assert int(response.headers["Content-Length"]) > 1 << 20
        received = 0
        for chunk in response.iter_raw(1):
            received += len(chunk)
            if received >= 5:
                break
    assert fake_twilio.feedback == []  # the request was not handled


@pytest.mark.parametrize(
    "fault",
    [RawAnswer(200, b"<html>ok</html>", content_type="text/html"), RawAnswer(201), RawAnswer(502)],
)
def test_raw_answers(fake_twilio: FakeTwilio, fault: RawAnswer) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(fault)
    response = post(fake_twilio, feedback_url(fake_twilio, sid), {"Outcome": "confirmed"})
    assert (response.status_code, response.content) == (fault.status, fault.body)
    assert response.headers["Content-Type"] == fault.content_type
    assert fake_twilio.feedback == []


def test_raw_answer_streams_a_large_body(fake_twilio: FakeTwilio) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(RawAnswer(200, b"x" * 65536, repeat=64))
    response = post(fake_twilio, feedback_url(fake_twilio, sid), {"Outcome": "confirmed"})
    assert len(response.content) == 4 << 20


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [
        (0, "0"),
        (-1, "-1"),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"),
    ],
)
def test_retry_after_is_sent_as_given(
    fake_twilio: FakeTwilio, retry_after: float | str, header: str
) -> None:
    sid = send(fake_twilio)
    fake_twilio.fail_next(Status(429, retry_after=retry_after))
    response = post(fake_twilio, feedback_url(fake_twilio, sid), {"Outcome": "confirmed"})
    assert response.headers["Retry-After"] == header


def test_new_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="RawAnswer"):
        RawAnswer(600)
    with pytest.raises(ValueError, match="RawAnswer"):
        RawAnswer(200, repeat=-1)
