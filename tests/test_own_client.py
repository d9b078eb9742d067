"""``FeedbackTracker(settings, client=...)``: the app's own ``twilio.rest.Client`` is the one
used for sends, feedback posts and SID lookups, with the reporter's timeouts and error
classification intact. Asserted at the emulator: the requests carry that client's
credentials and user agent, and reach that client's base URL only."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from twilio_feedback import ConfigurationError, FeedbackTracker, Settings, State
from twilio_feedback.stores.memory import MemoryStore
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.testing.fake_twilio import Drop, Hang, Status
from twilio_feedback.tracker import key_tracking_id

from .conftest import SECRET_KEY

PHONE, SENDER = "+15558675310", "+15017122661"
MARK = "my-app/1.0"


@pytest.fixture
def decoy() -> Iterator[FakeTwilio]:
    """Where the settings point: nothing may reach it."""
    with FakeTwilio() as fake:
        yield fake


@pytest.fixture
def own_client(fake_twilio: FakeTwilio) -> Client:
    """The app's client: an API key (not the settings' credentials), its own user agent
    extension and HTTP client, pointed at the emulator."""
    key_sid, key_secret = fake_twilio.add_api_key()
    return fake_twilio.client(
        username=key_sid,
        password=key_secret,
        account_sid=fake_twilio.account_sid,
        http_client=TwilioHttpClient(timeout=30),
        user_agent_extensions=[MARK],
    )


@pytest.fixture
def tracker_with_client(
    fake_twilio: FakeTwilio, decoy: FakeTwilio, own_client: Client
) -> Iterator[FeedbackTracker]:
    settings = Settings(
        account_sid=fake_twilio.account_sid,
        auth_token="not-the-token-the-emulator-knows-0123",
        secret_key=SECRET_KEY,
        store=MemoryStore(),
        api_base_url=decoy.base_url,
        request_timeout=0.5,
        reporter_concurrency=4,
    )
    tracker = FeedbackTracker(settings, client=own_client)
    yield tracker
    tracker.close(timeout=2)


def only_the_client_was_used(fake: FakeTwilio, decoy: FakeTwilio) -> None:
    assert decoy.requests == []
    assert fake.requests
    for request in fake.requests:
        assert MARK in request.headers["user-agent"], request.path
        assert request.status != 401, request.path  # the settings' token would be refused


def test_sends_feedback_and_lookups_all_go_through_the_client(
    tracker_with_client: FeedbackTracker, fake_twilio: FakeTwilio, decoy: FakeTwilio
) -> None:
    tracker = tracker_with_client
    sids = [
        str(tracker.send(to=PHONE, from_=SENDER, body="Go {link}", link="https://a.example/c").sid)
        for _ in range(10)
    ]
    for message in fake_twilio.messages:
        assert tracker.confirm_token(message.body.rsplit("id=", 1)[1]).confirmed
    # A send whose answer is lost: the SID is looked up, through the client too.
    fake_twilio.fail_next(Drop(after=True), endpoint="messages")
    with pytest.raises(requests.ConnectionError):  # what the client raised, unchanged
        tracker.send(to=PHONE, from_=SENDER, body="Code 77", key="lost")
    assert tracker.confirm(key="lost").confirmed
    posts = fake_twilio.wait_for_feedback(11, timeout=15)
    assert {p.message_sid for p in posts} == {*sids, fake_twilio.messages[-1].sid}
    assert tracker.flush(5) == 0
    only_the_client_was_used(fake_twilio, decoy)
    assert any(r.method == "GET" for r in fake_twilio.requests)  # the lookup


def test_retry_after_and_permanent_refusals_are_classified_as_ever(
    tracker_with_client: FeedbackTracker, fake_twilio: FakeTwilio, decoy: FakeTwilio
) -> None:
    tracker = tracker_with_client
    retried, refused = fake_twilio.add_messages(2)
    fake_twilio.fail_next(Status(429, retry_after=1.5))
    tracker.bind(key="retried", message_sid=retried)
    tracker.confirm(key="retried")
    fake_twilio.wait_for_feedback(1, timeout=10)
    first, *_, last = [r for r in fake_twilio.requests if r.path.endswith("Feedback.json")]
    assert (first.status, last.status) == (429, 200)
    assert last.time - first.time >= 1.5  # Twilio's Retry-After, honoured

    fake_twilio.fail_next(Status(404))
    tracker.bind(key="refused", message_sid=refused)
    tracker.confirm(key="refused")
    assert tracker.flush(5) == 0
    record = tracker.store.get(key_tracking_id("refused"))
    assert record is not None
    assert (record.state, record.error_code) == (State.FAILED, 20404)
    only_the_client_was_used(fake_twilio, decoy)


def test_request_timeout_bounds_each_call_of_the_client(
    tracker_with_client: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    # The client's HTTP client says 30 s; the tracker's request_timeout (0.5 s) applies.
    [sid] = fake_twilio.add_messages(1)
    fake_twilio.fail_next(Hang())
    tracker_with_client.bind(key="k", message_sid=sid)
    started = time.monotonic()
    tracker_with_client.confirm(key="k")
    fake_twilio.wait_for_feedback(1, timeout=10)
    assert time.monotonic() - started < 5
    assert tracker_with_client.stats()["retried"] == 1


def test_without_settings_the_credentials_are_the_clients(
    fake_twilio: FakeTwilio, own_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_KEY", "TWILIO_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    tracker = FeedbackTracker(client=own_client, secret_key=SECRET_KEY, store=MemoryStore())
    try:
        assert tracker.settings.account_sid == fake_twilio.account_sid
        assert tracker.settings.api_key_sid == own_client.username
        assert own_client.password not in repr(tracker.settings)
        tracker.send(to=PHONE, from_=SENDER, body="c", key="k")
        assert tracker.confirm(key="k").confirmed
        fake_twilio.wait_for_feedback(1, timeout=5)
    finally:
        tracker.close(timeout=1)


async def test_an_async_http_client_or_another_object_is_refused(settings: Settings) -> None:
    http = AsyncTwilioHttpClient()
    client = Client("AC" + "0" * 32, "token", http_client=http)
    with pytest.raises(ConfigurationError, match="asynchronous"):
        FeedbackTracker(settings, client=client)
    await http.close()
    with pytest.raises(ConfigurationError, match=r"twilio\.rest\.Client"):
        FeedbackTracker(settings, client=object())  # type: ignore[arg-type]
