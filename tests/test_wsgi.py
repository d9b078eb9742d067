"""The WSGI adapter in process, with wsgiref.validate on both sides of the middleware."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any
from wsgiref.validate import validator

import pytest
from werkzeug.test import Client, EnvironBuilder

from twilio_feedback import FeedbackTracker, Settings
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.wsgi import ENVIRON_KEY, FeedbackMiddleware

from .apps import ClosingIterable, wsgi_app
from .conftest import CHROME

FORM = "application/x-www-form-urlencoded"


def _client(tracker: FeedbackTracker, app: Any = wsgi_app, **options: Any) -> Client:
    return Client(validator(FeedbackMiddleware(validator(app), tracker, **options)))


def _send(tracker: FeedbackTracker, fake: FakeTwilio) -> str:
    tracker.send(to="+15558675310", from_="+15017122661", body="{link}", link="http://t/confirm")
    return fake.messages[-1].body.rsplit("id=", 1)[1]


def _get(client: Client, url: str, **kw: Any) -> Any:
    headers = kw.pop("headers", {"User-Agent": CHROME})
    response = client.open(url, headers=headers, **kw)
    data = response.get_json(force=True) if response.status_code == 200 and response.data else None
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
    assert [p.outcome for p in fake_twilio.feedback] == ["confirmed"]


def test_the_apps_iterable_is_returned_as_it_is(tracker: FeedbackTracker) -> None:
    # Called directly: a validator in between would wrap the iterable.
    returned: list[Any] = []

    def app(environ: Any, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        returned.append(ClosingIterable(b"ok"))
        return returned[-1]  # type: ignore[no-any-return]

    def start_response(*args: Any) -> Any:
        return None

    middleware = FeedbackMiddleware(app, tracker)
    for path in ("/confirm", "/other"):
        environ = EnvironBuilder(path=path, headers=[("User-Agent", CHROME)]).get_environ()
        assert middleware(environ, start_response) is returned[-1]


def test_confirm_does_not_wait_for_twilio(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    fake_twilio.latency = 2.0
    started = time.perf_counter()
    _, data = _get(_client(tracker), f"/confirm?id={token}")
    assert time.perf_counter() - started < 1.0
    assert data["status"] == "confirmed"
    assert len(fake_twilio.wait_for_feedback(1, timeout=10)) == 1


def test_post_form_body_is_replayed(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    token = _send(tracker, fake_twilio)
    _, data = _get(_client(tracker), "/confirm", method="POST", data={"id": token, "c": "1"})
    assert data == {"status": "confirmed", "query": "", "body": f"id={token}&c=1"}


def test_other_posts_are_not_read(tracker: FeedbackTracker) -> None:
    body = b'{"id": "x"}'
    _, data = _get(
        _client(tracker), "/confirm", method="POST", data=body, content_type="application/json"
    )
    assert data == {"status": "invalid", "query": "", "body": body.decode()}
    big = b"id=x&pad=" + b"p" * 70_000
    _, data = _get(
        _client(tracker),
        "/confirm",
        method="POST",
        data=big,
        content_type="application/x-www-form-urlencoded",
    )
    assert data["status"] == "invalid"
    assert data["body"] == big.decode()


@pytest.mark.parametrize(
    ("method", "ua", "query", "status"),
    [
        ("HEAD", CHROME, "id=x", None),
        ("OPTIONS", CHROME, "id=x", "ignored"),
        (
            "GET",
            "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
            "id=x",
            "ignored",
        ),
        ("GET", "", "id=x", "ignored"),
        ("GET", CHROME, "", "invalid"),
        ("GET", CHROME, "id=" + "z" * 5000, "invalid"),
        ("GET", CHROME, "id=%FF%00&id=2", "invalid"),
    ],
)
def test_non_confirming_requests_reach_the_app(
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
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(dict(environ))
        return wsgi_app(environ, start_response)

    _, data = _get(_client(tracker, app), "/x?id=1", method="POST", data={"id": "2"})
    assert data == {"status": None, "query": "id=1", "body": "id=2"}
    assert ENVIRON_KEY not in seen[0]


def test_missing_path_info_is_the_root(tracker: FeedbackTracker) -> None:
    environ = EnvironBuilder(path="/").get_environ()
    del environ["PATH_INFO"]
    started: list[str] = []

    def start_response(status: str, headers: Any, *exc_info: Any) -> Any:
        started.append(status)
        return lambda data: None

    # Not under wsgiref.validate: formatting its PATH_INFO message raises KeyError here.
    body = FeedbackMiddleware(wsgi_app, tracker)(environ, start_response)
    assert b'"status": null' in b"".join(body)
    assert started == ["200 OK"]


def test_pattern_paths(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    token = _send(tracker, fake_twilio)
    client = _client(tracker, paths=re.compile(r"/c/\w+"))
    assert _get(client, f"/c/signin?id={token}")[1]["status"] == "confirmed"
    assert _get(client, f"/confirm?id={token}")[1]["status"] is None


def test_redirects(settings: Settings, fake_twilio: FakeTwilio) -> None:
    with FeedbackTracker(
        settings.replace(confirmed_redirect="https://app.example/ok", invalid_redirect="/bad")
    ) as tracker:
        token = _send(tracker, fake_twilio)
        client = _client(tracker)
        response, _ = _get(client, f"/confirm?id={token}&next=//evil.example")
        assert (response.status_code, response.headers["Location"]) == (
            303,
            "https://app.example/ok",
        )
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        response, _ = _get(client, "/confirm?id=forged", method="POST")
        assert (response.status_code, response.headers["Location"]) == (303, "/bad")
        response, _ = _get(client, f"/confirm?id={token}", method="HEAD")
        assert response.status_code == 303
        response, data = _get(client, f"/confirm?id={token}", method="OPTIONS")
        assert (response.status_code, data["status"]) == (200, "ignored")


def test_hide_token_in_query_and_request_uri(settings: Settings, fake_twilio: FakeTwilio) -> None:
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append({k: environ.get(k) for k in ("QUERY_STRING", "REQUEST_URI", "RAW_URI")})
        return wsgi_app(environ, start_response)

    with FeedbackTracker(settings.replace(hide_token=True)) as tracker:
        token = _send(tracker, fake_twilio)
        client = _client(tracker, app)
        uri = f"/confirm?id={token}&a=b"
        _, data = _get(client, uri, environ_base={"REQUEST_URI": uri, "RAW_URI": uri})
        assert data["status"] == "confirmed"
        assert seen[-1] == {
            "QUERY_STRING": "a=b",
            "REQUEST_URI": "/confirm?a=b",
            "RAW_URI": "/confirm?a=b",
        }
        _, data = _get(client, f"/confirm?id={token}")
        assert (data["status"], data["query"]) == ("duplicate", "")
        assert seen[-1]["REQUEST_URI"] == "/confirm"  # werkzeug sets it too


# -- bad input ---------------------------------------------------------------------------


def test_an_empty_query_parameter_defers_to_the_form(
    tracker: FeedbackTracker, fake_twilio: FakeTwilio
) -> None:
    token = _send(tracker, fake_twilio)
    _, data = _get(_client(tracker), "/confirm?id=&a=1", method="POST", data={"id": token})
    assert data["status"] == "confirmed"


def test_a_form_with_too_many_fields_is_invalid_and_quiet(
    tracker: FeedbackTracker, caplog: pytest.LogCaptureFixture
) -> None:
    body = "&".join(f"f{n}=1" for n in range(3000))
    with caplog.at_level(logging.DEBUG, logger="twilio_feedback"):
        _, data = _get(_client(tracker), "/confirm", method="POST", data=body, content_type=FORM)
    assert data["status"] == "invalid"
    assert [r for r in caplog.records if r.levelno > logging.DEBUG] == []


class BrokenInput:
    """A wsgi.input whose client leaves after ``data``."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.data:
            data, self.data = self.data, b""
            return data
        raise OSError("connection reset by peer")


def _environ(path: str = "/confirm", **extra: Any) -> dict[str, Any]:
    environ = EnvironBuilder(path=path, headers=[("User-Agent", CHROME)]).get_environ()
    environ.update(extra)
    return environ


def _call(app: Any, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    started: list[Any] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return lambda data: None

    body = b"".join(app(environ, start_response))
    return started[0], started[1], body


def test_a_body_read_that_raises_is_the_end_of_the_body(tracker: FeedbackTracker) -> None:
    environ = _environ(
        REQUEST_METHOD="POST",
        CONTENT_TYPE=FORM,
        CONTENT_LENGTH="40",
        **{"wsgi.input": BrokenInput(b"a=1&id=")},
    )
    status, _, body = _call(FeedbackMiddleware(wsgi_app, tracker), environ)
    assert status == "200 OK"
    # The app saw the bytes that came, then the end of the body.
    assert json.loads(body) == {"status": "invalid", "query": "", "body": "a=1&id="}


def test_a_missing_wsgi_input_is_no_body(tracker: FeedbackTracker) -> None:
    environ = _environ(REQUEST_METHOD="POST", CONTENT_TYPE=FORM, CONTENT_LENGTH="10")
    del environ["wsgi.input"]
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(environ[ENVIRON_KEY].status)
        start_response("204 No Content", [])
        return []

    assert _call(FeedbackMiddleware(app, tracker), environ)[0] == "204 No Content"
    assert seen == ["invalid"]


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/best%C3%A4tigen", "confirmed"),
        ("/bestätigen", "confirmed"),
        ("/best%E4tigen", None),  # latin-1, not UTF-8
        ("/confirm", "confirmed"),
    ],
)
def test_non_ascii_confirm_paths(
    settings: Settings, fake_twilio: FakeTwilio, url: str, status: str | None
) -> None:
    with FeedbackTracker(settings.replace(confirm_paths=("/bestätigen", "/confirm"))) as tracker:
        token = _send(tracker, fake_twilio)
        assert _get(_client(tracker), f"{url}?id={token}")[1]["status"] == status


@pytest.mark.parametrize("path_match", ["exact", "prefix"])
def test_non_ascii_paths_with_ascii_settings(
    settings: Settings, fake_twilio: FakeTwilio, path_match: str
) -> None:
    with FeedbackTracker(settings.replace(path_match=path_match)) as tracker:
        token = _send(tracker, fake_twilio)
        expected = "confirmed" if path_match == "prefix" else None
        assert _get(_client(tracker), f"/confirm%C3%A4?id={token}")[1]["status"] == expected


def test_non_ascii_pattern_paths(tracker: FeedbackTracker, fake_twilio: FakeTwilio) -> None:
    token = _send(tracker, fake_twilio)
    client = _client(tracker, paths=re.compile(r"/(de|fr)/(bestätigen|confirmer)"))
    assert _get(client, f"/de/best%C3%A4tigen?id={token}")[1]["status"] == "confirmed"
    assert _get(client, f"/fr/confirmer?id={token}")[1]["status"] == "duplicate"
    assert _get(client, f"/de/best%E4tigen?id={token}")[1]["status"] is None
