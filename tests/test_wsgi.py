"""The WSGI adapter in process, with wsgiref.validate on both sides."""

from __future__ import annotations

from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.test import Client

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.wsgi import FeedbackMiddleware

from .apps import ClosingIterable, wsgi_app
from .conftest import CHROME


def _client(tracker: FeedbackTracker) -> Client:
    return Client(validator(FeedbackMiddleware(validator(wsgi_app), tracker)))


def _send(tracker: FeedbackTracker, fake: FakeTwilio) -> str:
    tracker.send(to="+15558675310", from_="+15017122661", body="{link}", link="http://t/confirm")
    return fake.messages[-1].body.rsplit("id=", 1)[1]


def _get(client: Client, url: str, **kw: Any) -> Any:
    headers = kw.pop("headers", {"User-Agent": CHROME})
    response = client.open(url, headers=headers, **kw)
    data = response.get_json(force=True) if response.status_code == 200 else None
    response.close()
    return response, data


def test_confirm_duplicate_and_close_untouched(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    client = _client(tracker)
    token = _send(tracker, fake_twilio)
    ClosingIterable.closed = False
    _, first = _get(client, f"/confirm?id={token}&x=1")
    assert first == {"status": "confirmed", "query": f"id={token}&x=1", "body": ""}
    assert ClosingIterable.closed
    assert _get(client, f"/confirm?id={token}")[1]["status"] == "duplicate"
    assert tracker.flush(5) == 0
    assert len(fake_twilio.feedback) == 1


def test_post_form(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    token = _send(tracker, fake_twilio)
    _, data = _get(_client(tracker), "/confirm", method="POST", data={"id": token, "c": "1"})
    assert data["status"] == "confirmed"
    assert data["body"] == f"id={token}&c=1"


@pytest.mark.parametrize(
    ("method", "ua", "query", "status"),
    [
        ("HEAD", CHROME, "id=x", None),
        (
            "GET",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "id=x",
            "ignored",
        ),
        ("GET", CHROME, "", "invalid"),
        ("GET", CHROME, "id=" + "z" * 5000, "invalid"),
    ],
)
def test_non_confirming(
    tracker: FeedbackTracker,
    fake_twilio: FakeTwilio,
    method: str,
    ua: str,
    query: str,
    status: str | None,
) -> None:
    response, data = _get(
        _client(tracker), "/confirm?" + query, method=method, headers={"User-Agent": ua}
    )
    assert response.status_code == 200
    if status:
        assert data["status"] == status
    assert fake_twilio.feedback == []


def test_other_paths_untouched(tracker: FeedbackTracker) -> None:
    assert _get(_client(tracker), "/x?id=1")[1] == {"status": None, "query": "id=1", "body": ""}


def test_redirect_and_hide_token(settings: Settings, fake_twilio: FakeTwilio) -> None:
    with FeedbackTracker(settings.replace(confirmed_redirect="https://app.example/ok")) as tracker:
        token = _send(tracker, fake_twilio)
        response, _ = _get(_client(tracker), f"/confirm?id={token}")
        assert (response.status_code, response.headers["Location"]) == (
            303,
            "https://app.example/ok",
        )
    with FeedbackTracker(settings.replace(hide_token=True)) as tracker:
        token = _send(tracker, fake_twilio)
        assert _get(_client(tracker), f"/confirm?id={token}&a=b")[1]["query"] == "a=b"
