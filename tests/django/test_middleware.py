"""The middleware under Django's own test clients (``Client``: the sync stack,
``AsyncClient``: the async one), in the example project (the quickstart's app), against the
emulator over real HTTP: the acceptance of issue 10, and the gate's answers as the other
adapters give them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, RequestFactory

from twilio_feedback import ConfirmResult
from twilio_feedback.confirm import FORM_CONTENT_TYPE, Decision
from twilio_feedback.django import FeedbackMiddleware, confirm_result, get_settings
from twilio_feedback.testing import FakeTwilio
from twilio_feedback.tokens import TokenSigner

from .conftest import BROWSER

PHONE = "+15558675310"
PREVIEWS = {
    "iMessage": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, "
    "like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
    "WhatsApp": "WhatsApp/2.23.20.0 A",
    "Slack": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
}


@dataclass
class Visitor:
    """The example project through one of Django's test clients, called the same way."""

    kind: str
    fake: FakeTwilio

    def __post_init__(self) -> None:
        self.client = Client() if self.kind == "Client" else AsyncClient()

    def request(self, method: str, path: str, agent: str | None = BROWSER, **kw: Any) -> Any:
        headers = {"User-Agent": agent} if agent else {}
        call = getattr(self.client, method.lower())
        if self.kind == "AsyncClient":
            call = async_to_sync(call)
        return call(path, headers=headers, **kw)

    def send(self) -> tuple[str, str]:
        """Have the app text a sign-in link; return the message SID and the link."""
        response = self.request(
            "POST", "/send", data={"to": PHONE}, content_type="application/json"
        )
        assert response.status_code == 200, response.content
        sid = response.json()["message_sid"]
        body = next(m.body for m in self.fake.messages if m.sid == sid)
        return sid, body.rsplit(" ", 1)[-1]

    def status(self, link: str, agent: str | None = BROWSER) -> str:
        response = self.request("GET", link, agent)
        assert response.status_code == 200, response.content
        return str(response.json()["status"])

    def posts(self, sid: str) -> int:
        return sum(1 for post in self.fake.feedback if post.message_sid == sid)


@pytest.fixture(params=["Client", "AsyncClient"])
def visitor(
    request: pytest.FixtureRequest, on_emulator: Callable[..., Any], fake_twilio: FakeTwilio
) -> Visitor:
    return Visitor(request.param, fake_twilio)


def test_link_confirms_once_and_is_reported_once(visitor: Visitor) -> None:
    sid, link = visitor.send()
    assert link.startswith("http://testserver/confirm?id=")

    head = visitor.request("HEAD", link)
    assert head.status_code == 200
    assert head.content == b""
    for name, agent in PREVIEWS.items():
        assert visitor.status(link, agent) == "ignored", name
    assert visitor.posts(sid) == 0

    first = visitor.request("GET", link)
    assert first.json() == {"status": "confirmed", "message_sid": sid}
    assert visitor.fake.wait_for(lambda: visitor.posts(sid) == 1, timeout=10)
    assert visitor.status(link) == "duplicate"
    assert visitor.status(link, PREVIEWS["WhatsApp"]) == "ignored"

    # A later message's report has gone through: no second report of the first followed.
    later, later_link = visitor.send()
    assert visitor.status(later_link) == "confirmed"
    assert visitor.fake.wait_for(lambda: visitor.posts(later) == 1, timeout=10)
    assert visitor.posts(sid) == 1
    assert {p.outcome for p in visitor.fake.feedback} == {"confirmed"}


def test_the_test_clients_own_user_agent_is_a_bot_by_default(visitor: Visitor) -> None:
    # Django's test client sends no User-Agent: ignored, like an unnamed scanner.
    _, link = visitor.send()
    assert visitor.status(link, agent=None) == "ignored"


def test_bad_tokens_reach_the_app_and_confirm_nothing(visitor: Visitor) -> None:
    sid, link = visitor.send()
    base, token = link.split("?id=")
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    key = get_settings().secret_keys[-1]
    expired = TokenSigner(key, timer=lambda: time.time() - 30 * 86400).issue()[1]
    cases = {
        f"{base}?id={tampered}": "invalid",
        f"{base}?id={secrets.token_urlsafe(24)}": "invalid",
        f"{base}?id={expired}": "expired",
        f"{base}?id=": "invalid",
        base: "invalid",
        f"{base}?id={'x' * 4000}": "invalid",
    }
    for url, status in cases.items():
        assert visitor.status(url) == status, url
    assert visitor.posts(sid) == 0
    assert visitor.status(link) == "confirmed"  # the genuine link was not used up
    assert visitor.fake.wait_for(lambda: visitor.posts(sid) == 1, timeout=10)


@pytest.mark.slow
def test_confirm_answers_at_once_while_twilio_takes_two_seconds(visitor: Visitor) -> None:
    sid, link = visitor.send()
    visitor.fake.latency = 2.0
    started = time.perf_counter()
    assert visitor.status(link) == "confirmed"
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"the confirm response took {elapsed:.2f} s"
    assert visitor.posts(sid) == 0
    assert visitor.fake.wait_for(lambda: visitor.posts(sid) == 1, timeout=15)


def test_other_paths_are_untouched(visitor: Visitor) -> None:
    plain = visitor.request("GET", "/")
    with_query = visitor.request("GET", "/?id=abc")
    assert plain.status_code == with_query.status_code == 200
    assert plain.content == with_query.content
    assert b"/send" in plain.content
    assert visitor.fake.feedback == []


def test_a_form_post_confirms_and_the_view_still_reads_the_form(
    visitor: Visitor, on_emulator: Callable[..., Any]
) -> None:
    sid, link = visitor.send()
    token = link.split("?id=")[1]
    request = RequestFactory().post(
        "/confirm",
        urlencode({"a": "1", "id": token}),
        content_type=FORM_CONTENT_TYPE,
        headers={"User-Agent": BROWSER},
    )
    seen, _ = _through(request, asynchronous=visitor.kind == "AsyncClient")
    assert seen is not None
    result = confirm_result(seen)
    assert result is not None
    assert (result.status, result.message_sid) == ("confirmed", sid)
    assert seen.POST.dict() == {"a": "1", "id": token}


# -- the gate's answers, through the middleware ----------------------------------------------


def _through(
    request: HttpRequest, *, asynchronous: bool = False
) -> tuple[HttpRequest | None, HttpResponse]:
    """Run ``request`` through the middleware; the request the view saw (or ``None``)."""
    seen: list[HttpRequest] = []

    def view(request: HttpRequest) -> HttpResponse:
        seen.append(request)
        return HttpResponse("view")

    async def async_view(request: HttpRequest) -> HttpResponse:
        return view(request)

    if asynchronous:
        response = async_to_sync(FeedbackMiddleware(async_view))(request)
    else:
        response = FeedbackMiddleware(view)(request)
    return (seen[0] if seen else None), response


@pytest.mark.usefixtures("on_emulator")
def test_request_twilio_feedback_is_none_on_other_paths() -> None:
    for asynchronous in (False, True):
        seen, _ = _through(RequestFactory().get("/elsewhere?id=x"), asynchronous=asynchronous)
        assert seen is not None
        assert seen.twilio_feedback is None  # type: ignore[attr-defined]
        assert confirm_result(seen) is None


def test_confirm_paths_are_relative_to_the_script_prefix(
    visitor: Visitor, on_emulator: Callable[..., Any]
) -> None:
    _, link = visitor.send()
    query = link.split("?", 1)[1]
    request = RequestFactory().get(
        f"/confirm?{query}", headers={"User-Agent": BROWSER}, SCRIPT_NAME="/app"
    )
    assert request.path == "/app/confirm"
    seen, _ = _through(request)
    assert seen is not None
    result = confirm_result(seen)
    assert result is not None
    assert result.status == "confirmed"


def test_redirects_are_answered_as_the_decision_says(
    visitor: Visitor, on_emulator: Callable[..., Any]
) -> None:
    asynchronous = visitor.kind == "AsyncClient"
    sid, link = visitor.send()
    query = link.split("?", 1)[1]
    with on_emulator(CONFIRMED_REDIRECT="/welcome", INVALID_REDIRECT="/sorry"):
        seen, response = _through(
            RequestFactory().get(f"/confirm?{query}", headers={"User-Agent": BROWSER}),
            asynchronous=asynchronous,
        )
        assert seen is None  # answered by the middleware
        expected = Decision(ConfirmResult("confirmed"), "", "/welcome")
        assert response.status_code == expected.status
        assert {k.lower(): v for k, v in response.items()} == dict(expected.headers)
        assert response.content == b""
        _, invalid = _through(
            RequestFactory().get("/confirm?id=nope", headers={"User-Agent": BROWSER}),
            asynchronous=asynchronous,
        )
        assert invalid["Location"] == "/sorry"
    assert visitor.fake.wait_for(lambda: visitor.posts(sid) == 1, timeout=10)


def test_hide_token_takes_the_token_out_of_what_the_view_sees(
    visitor: Visitor, on_emulator: Callable[..., Any]
) -> None:
    asynchronous = visitor.kind == "AsyncClient"
    _, link = visitor.send()
    token = link.split("?id=")[1]
    with on_emulator(HIDE_TOKEN=True):
        factory = RequestFactory()
        request = factory.get(
            f"/confirm?a=1&id={token}&b=2",
            headers={"User-Agent": BROWSER},
            REQUEST_URI=f"/confirm?a=1&id={token}&b=2",
        )
        assert request.GET["id"] == token  # parsed before the middleware: again after it
        seen, _ = _through(request, asynchronous=asynchronous)
    assert seen is not None
    assert confirm_result(seen).status == "confirmed"  # type: ignore[union-attr]
    assert seen.GET.dict() == {"a": "1", "b": "2"}
    assert seen.get_full_path() == "/confirm?a=1&b=2"
    assert seen.META["REQUEST_URI"] == "/confirm?a=1&b=2"
    assert token not in repr(seen.META)


@pytest.mark.usefixtures("on_emulator")
def test_one_entry_is_sync_or_async_as_the_stack_around_it() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    assert FeedbackMiddleware.sync_capable
    assert FeedbackMiddleware.async_capable
    assert not iscoroutinefunction(FeedbackMiddleware(view))
    assert iscoroutinefunction(FeedbackMiddleware(async_view))
