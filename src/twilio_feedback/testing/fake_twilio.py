"""FakeTwilio: a real HTTP server on 127.0.0.1 that speaks the Twilio endpoints this
library uses, with fault injection.

It follows Twilio's OpenAPI description of ``POST .../Messages.json`` (CreateMessage),
``GET .../Messages.json`` (ListMessage) and ``POST .../Messages/{MessageSid}/Feedback.json``:
the same paths, Basic auth (account SID and auth token, or API key and secret; a parent
account acting on its subaccounts), form fields and query parameters, status codes, the
list envelope, and error bodies with ``code``, ``message``, ``more_info`` and ``status``.
Every request is recorded; faults (latency, error statuses, 429 with Retry-After, dropped
connections, hanging, answers that trickle or are not JSON) are injected on demand.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import email.utils
import json
import re
import secrets
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeAlias
from urllib.parse import parse_qs, urlencode, urlsplit

if TYPE_CHECKING:
    from twilio.rest import Client

__all__ = [
    "Delay",
    "Drop",
    "FakeTwilio",
    "Fault",
    "FeedbackPost",
    "Hang",
    "Message",
    "RawAnswer",
    "RecordedRequest",
    "Status",
    "Trickle",
    "WaitTimeout",
]

Endpoint = Literal["feedback", "messages", "list", "any"]
_ENDPOINTS: tuple[Endpoint, ...] = ("feedback", "messages", "list", "any")
_MESSAGES_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json")
_FEEDBACK_PATH = re.compile(
    r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages/(?P<message>[^/]+)/Feedback\.json"
)
_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_MESSAGE_SID = re.compile(r"(SM|MM)[0-9a-fA-F]{32}")
_CODES = {400: 20001, 401: 20003, 403: 20003, 404: 20404, 405: 20004, 429: 20429}
_REASONS = {429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_MAX_BODY = 1 << 20
_LINK = re.compile(r"https?://[^\s<>\"']+")
_PAGE_SIZE, _MAX_PAGE_SIZE = 50, 1000
_LIST_PARAMS = ("To", "From", "DateSent", "DateSent<", "DateSent>", "PageSize", "Page", "PageToken")


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP status and a Twilio error body (``Retry-After`` if given).

    ``code`` defaults to Twilio's code for the status (20429, 20500, 20503, ...).
    ``retry_after`` is sent as given when it is a string (an HTTP date, garbage), else
    formatted as a number (``nan``, ``inf`` and negative values included).
    """

    status: int
    code: int | None = None
    message: str | None = None
    retry_after: float | str | None = None

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"an injected status must be 4xx or 5xx, not {self.status}")


@dataclass(frozen=True)
class Drop:
    """Close the connection without answering (the client sees a connection error).

    ``after=True`` handles the request first (the message is created, the feedback
    accepted), then drops: the client sees a network error although Twilio acted.
    """

    after: bool = False


@dataclass(frozen=True)
class Hang:
    """Answer nothing until :meth:`FakeTwilio.release` or :meth:`FakeTwilio.stop`, then
    close the connection.

    ``after=True`` handles the request first (the message is created, the feedback
    accepted), then hangs: the client times out although Twilio acted.
    """

    after: bool = False


@dataclass(frozen=True)
class Trickle:
    """A slow-loris answer: the status line and headers (announcing a large JSON body) at
    once, then one byte of body every ``interval`` seconds until :meth:`FakeTwilio.release`
    or :meth:`FakeTwilio.stop`. The request is not handled."""

    status: int = 200
    interval: float = 0.2


@dataclass(frozen=True)
class RawAnswer:
    """Answer with any status (2xx included) and ``body`` repeated ``repeat`` times, as it
    is: a body that is not JSON, empty, or far larger than Twilio ever sends (streamed, not
    held in memory). The request is not handled."""

    status: int = 200
    body: bytes = b""
    repeat: int = 1
    content_type: str = "application/json; charset=utf-8"

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599 or self.repeat < 0:
            raise ValueError("RawAnswer needs a status in 100-599 and repeat >= 0")


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` (cut short by :meth:`FakeTwilio.stop`), then answer normally."""

    seconds: float


Fault: TypeAlias = int | Status | Drop | Hang | Delay | Trickle | RawAnswer
"""An injected fault: a bare 4xx/5xx status or one of the fault classes."""
_FAULT_TYPES = (int, Status, Drop, Hang, Delay, Trickle, RawAnswer)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it. The Authorization header is not kept;
    ``status`` is None when no answer was sent (:class:`Drop`, :class:`Hang`, stop).
    ``query`` holds the query parameters (the first value of each)."""

    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    status: int | None
    time: float
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """A message created through the emulator; ``params`` holds every form field."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    provide_feedback: bool
    messaging_service_sid: str | None
    media_urls: tuple[str, ...]
    params: dict[str, str]
    date_created: str


@dataclass(frozen=True)
class FeedbackPost:
    """A feedback post the emulator accepted (injected failures are not among them)."""

    account_sid: str
    message_sid: str
    outcome: str
    time: float


class WaitTimeout(AssertionError, TimeoutError):
    """A ``wait_for_*`` deadline passed: an assertion failure that is also a TimeoutError."""


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    fault: Trickle | RawAnswer | None = None
    # A feedback post this answer makes visible, together with its request's record: a
    # test that waited for the post then finds the request in ``requests`` too.
    post: FeedbackPost | None = None


@dataclass
class _Account:
    sid: str
    token: str = field(repr=False)
    parent: str | None = None
    keys: dict[str, str] = field(default_factory=dict, repr=False)


class _Stopped(Exception):
    pass


class FakeTwilio:
    """A Twilio API emulator serving real HTTP on ``127.0.0.1``.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Point the library at
    :attr:`base_url` (``Settings(api_base_url=fake.base_url, account_sid=fake.account_sid,
    auth_token=fake.auth_token)``), or get an official client with :meth:`client`.
    ``feedback_status`` is the success status of feedback posts: 200 as the current spec
    says, or 201 as Twilio answered until mid-2025. ``port=0`` picks a free port.
    """

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        feedback_status: int = 200,
        port: int = 0,
    ) -> None:
        if not 200 <= feedback_status <= 299:
            raise ValueError(f"feedback_status must be 2xx, not {feedback_status}")
        self._cond = threading.Condition()  # guards everything below; re-entrant (RLock)
        self._accounts: dict[str, _Account] = {}
        self.account_sid, self.auth_token = self.add_account(account_sid, auth_token)
        self.feedback_status = feedback_status
        self.latency: float = 0.0
        """Seconds every request waits before it is handled (cut short by :meth:`stop`)."""
        self._port = port
        self._requests: list[RecordedRequest] = []
        self._messages: list[Message] = []
        self._feedback: list[FeedbackPost] = []
        self._known: dict[str, str] = {}  # message SID -> account SID; survives reset()
        self._queued: dict[str, deque[Fault]] = {name: deque() for name in _ENDPOINTS}
        self._always: dict[str, Fault | None] = dict.fromkeys(_ENDPOINTS)
        self._in_flight = 0
        self._generation = 0  # bumped by release(): hanging requests end
        self._stopping = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> FakeTwilio:
        """Bind ``127.0.0.1`` and serve in a daemon thread; return self."""
        if self._server is not None:
            return self
        with self._cond:
            self._stopping = False
        self._server = _Server(("127.0.0.1", self._port), _make_handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-twilio",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, promptly: hanging and delayed requests end without an answer,
        open connections are closed, threads are joined within ``timeout`` seconds."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        for worker in [*server.close_connections(), thread]:
            if worker is not None:
                worker.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "stopped"
        return f"<FakeTwilio {where} account_sid={self.account_sid}>"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: use it as ``Settings.api_base_url``."""
        if self._server is None:
            raise RuntimeError("FakeTwilio is not started: call start() or use `with`")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def environ(self) -> dict[str, str]:
        """The environment variables that point an app at this emulator: its account SID
        and auth token, and ``TWILIO_FEEDBACK_API_BASE_URL``."""
        return {
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_FEEDBACK_API_BASE_URL": self.base_url,
        }

    # -- accounts ----------------------------------------------------------------------

    def add_account(
        self, sid: str | None = None, token: str | None = None, parent: str | None = None
    ) -> tuple[str, str]:
        """Create an account, a subaccount of ``parent`` if given; return ``(sid, token)``.

        As in Twilio, a parent's credentials may act on its subaccounts, not the reverse.
        """
        sid = sid or "AC" + secrets.token_hex(16)
        if not _ACCOUNT_SID.fullmatch(sid):
            raise ValueError("an account SID is 'AC' followed by 32 hex digits")
        token = token or secrets.token_hex(16)
        with self._cond:
            if parent is not None and parent not in self._accounts:
                raise ValueError(f"unknown parent account {parent}")
            self._accounts[sid] = _Account(sid, token, parent)
        return sid, token

    def add_messages(self, count: int, account_sid: str | None = None) -> list[str]:
        """Seed ``count`` sent messages without HTTP (for load tests); return their SIDs."""
        account = account_sid or self.account_sid
        stamp = _rfc2822(time.time())
        made = [
            Message(
                sid="SM" + secrets.token_hex(16),
                account_sid=account,
                to="+15558675310",
                from_="+15017122661",
                body="",
                provide_feedback=True,
                messaging_service_sid=None,
                media_urls=(),
                params={},
                date_created=stamp,
            )
            for _ in range(count)
        ]
        with self._cond:
            self._messages.extend(made)
            self._known.update((m.sid, account) for m in made)
        return [m.sid for m in made]

    def add_api_key(self, account_sid: str | None = None) -> tuple[str, str]:
        """Create an API key on an account (default: the main one); return ``(sid, secret)``."""
        key_sid, secret = "SK" + secrets.token_hex(16), secrets.token_hex(16)
        with self._cond:
            account = self._accounts.get(account_sid or self.account_sid)
            if account is None:
                raise ValueError(f"unknown account {account_sid}")
            account.keys[key_sid] = secret
        return key_sid, secret

    def client(self, **kwargs: Any) -> Client:
        """An official ``twilio.rest.Client`` on this emulator (main account by default).

        The client reads ``TWILIO_EDGE`` / ``TWILIO_REGION`` from ``environment`` when it is
        falsy, ``{}`` included, so a non-empty mapping without them is passed: nothing in
        your environment can send these requests to a real Twilio edge.
        """
        from twilio.rest import Client

        kwargs.setdefault("username", self.account_sid)
        kwargs.setdefault("password", self.auth_token)
        kwargs.setdefault("environment", {"TWILIO_FEEDBACK_FAKE": "1"})
        client = Client(**kwargs)
        client.api.base_url = self.base_url
        return client

    # -- recordings and waiting ----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every answered, dropped or released request, oldest first (a snapshot)."""
        with self._cond:
            return list(self._requests)

    @property
    def messages(self) -> list[Message]:
        """Messages created, oldest first (a snapshot)."""
        with self._cond:
            return list(self._messages)

    def last_link(self, to: str | None = None) -> str:
        """The last link (``http://`` or ``https://`` URL) in the last message sent to
        ``to`` (to anyone when ``None``): what the person would open. Raises
        ``AssertionError`` when there is no such message, or it holds no link."""
        messages = [m for m in self.messages if to is None or m.to == to]
        if not messages:
            sent = ", ".join(sorted({m.to for m in self.messages})) or "nobody"
            raise AssertionError(f"no message was sent to {to or 'anyone'}; sent to: {sent}")
        links = _LINK.findall(messages[-1].body)
        if not links:
            raise AssertionError(f"the last message to {messages[-1].to} holds no link")
        return str(links[-1]).rstrip(".,;:!?)]}")

    def last_token(self, to: str | None = None, param: str = "id") -> str:
        """The token in :meth:`last_link` (its ``param`` query parameter, the settings'
        ``token_param``). Raises ``AssertionError`` when the link has none."""
        link = self.last_link(to)
        values = parse_qs(urlsplit(link).query).get(param)
        if not values:
            raise AssertionError(f"the last link sent to {to or 'anyone'} has no {param}=")
        return values[0]

    @property
    def feedback(self) -> list[FeedbackPost]:
        """Feedback posts accepted, oldest first (a snapshot)."""
        with self._cond:
            return list(self._feedback)

    @property
    def in_flight(self) -> int:
        """Requests received and not yet answered (hanging and delayed ones count)."""
        with self._cond:
            return self._in_flight

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` is true, re-checked on every request; False on timeout."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_for_feedback(self, count: int = 1, timeout: float = 5.0) -> list[FeedbackPost]:
        """Wait until at least ``count`` feedback posts were accepted; return them all.

        Raises :class:`WaitTimeout` listing the requests seen, to show what went wrong.
        """
        if not self.wait_for(lambda: len(self._feedback) >= count, timeout):
            self._timed_out(f"{count} feedback post(s)", len(self._feedback), timeout)
        return self.feedback

    def wait_for_requests(
        self,
        count: int | Callable[[RecordedRequest], bool] = 1,
        timeout: float = 5.0,
        *,
        where: Callable[[RecordedRequest], bool] | None = None,
    ) -> list[RecordedRequest]:
        """Wait until ``count`` requests (matching ``where``, if given) were recorded; return
        the matching ones. ``wait_for_requests(predicate)`` waits for one match."""
        if callable(count):
            where, count = count, 1
        want, match = count, where or (lambda _: True)

        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if match(r)]

        if not self.wait_for(lambda: len(matching()) >= want, timeout):
            self._timed_out(f"{want} matching request(s)", len(matching()), timeout)
        with self._cond:
            return matching()

    def _timed_out(self, wanted: str, got: int, timeout: float) -> NoReturn:
        seen = [f"{r.method} {r.path} -> {r.status}" for r in self.requests[-10:]]
        raise WaitTimeout(
            f"expected {wanted} within {timeout}s, got {got}; "
            f"last requests: {'; '.join(seen) or 'none'}; in flight: {self.in_flight}"
        )

    # -- faults --------------------------------------------------------------------------

    def fail_next(self, *faults: Fault, endpoint: Endpoint = "feedback") -> None:
        """Queue faults, consumed one per request in order: ``fail_next(503, 503)``.

        ``endpoint="any"`` queues them for whichever endpoint comes next; an endpoint's own
        queue goes first. Faults act after authentication and routing.
        """
        checked = [_check_fault(fault) for fault in faults]
        with self._cond:
            self._queue_for(endpoint).extend(checked)

    def fail_always(self, fault: Fault, *, endpoint: Endpoint = "feedback") -> None:
        """Apply ``fault`` to every request (after queued ones) until :meth:`clear_faults`."""
        checked = _check_fault(fault)
        with self._cond:
            self._queue_for(endpoint)
            self._always[endpoint] = checked

    def clear_faults(self) -> None:
        """Remove every queued and permanent fault and :meth:`release` hanging requests."""
        with self._cond:
            for name in _ENDPOINTS:
                self._queued[name].clear()
                self._always[name] = None
        self.release()

    def release(self) -> None:
        """End every hanging request (its connection closes without an answer)."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget recordings, faults and latency. Accounts stay, and messages created before
        still accept feedback (a session-wide tracker may report them late)."""
        self.clear_faults()
        with self._cond:
            self._requests.clear()
            self._messages.clear()
            self._feedback.clear()
            self.latency = 0.0

    def _queue_for(self, endpoint: str) -> deque[Fault]:
        if endpoint not in self._queued:
            raise ValueError(f"endpoint must be one of {', '.join(_ENDPOINTS)}, not {endpoint!r}")
        return self._queued[endpoint]

    def _take_fault(self, endpoint: str) -> Fault | None:
        with self._cond:
            for name in (endpoint, "any"):
                if self._queued[name]:
                    return self._queued[name].popleft()
            always = self._always[endpoint]
            return always if always is not None else self._always["any"]

    # -- request handling (handler threads) ----------------------------------------------

    def _respond(
        self, method: str, target: str, headers: dict[str, str], fields: dict[str, list[str]]
    ) -> _Answer | None:
        """Handle and record one request; None means close the connection unanswered."""
        parts = urlsplit(target)
        query = {
            name: values[0]
            for name, values in parse_qs(parts.query, keep_blank_values=True).items()
        }
        form = {name: values[0] for name, values in fields.items()}
        media = tuple(fields.get("MediaUrl", ()))
        with self._cond:
            self._in_flight += 1
            self._cond.notify_all()
        answer: _Answer | None = None
        try:
            answer = self._route(method, parts.path, headers, form, media, query)
        except _Stopped:
            answer = None
        finally:
            kept = {k: v for k, v in headers.items() if k != "authorization"}
            status = answer.status if answer is not None else None
            with self._cond:
                self._in_flight -= 1
                if answer is not None and answer.post is not None:
                    self._feedback.append(answer.post)
                self._requests.append(
                    RecordedRequest(
                        method, parts.path, kept, form, status, time.time(), query=query
                    )
                )
                self._cond.notify_all()
        return answer

    def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        form: dict[str, str],
        media: tuple[str, ...],
        query: dict[str, str],
    ) -> _Answer | None:
        self._pause(self.latency)
        caller = self._authenticate(headers.get("authorization", ""))
        if caller is None:
            return _error(401, "Authenticate", headers={"WWW-Authenticate": 'Basic realm="Twilio"'})
        # Twilio answers 404 for a path whose SIDs are malformed, as for any unknown path.
        feedback = _FEEDBACK_PATH.fullmatch(path)
        match = feedback or _MESSAGES_PATH.fullmatch(path)
        if (
            match is None
            or not _ACCOUNT_SID.fullmatch(match["account"])
            or (feedback is not None and not _MESSAGE_SID.fullmatch(feedback["message"]))
        ):
            return _not_found(path)
        if method != "POST" and (feedback is not None or method != "GET"):
            return _error(405, "Method not allowed")
        account = match["account"]
        with self._cond:
            target = self._accounts.get(account)
            if caller != account and (target is None or target.parent != caller):
                return _error(403, "Authenticate")
        endpoint = "feedback" if feedback else "list" if method == "GET" else "messages"
        fault = self._take_fault(endpoint)
        if isinstance(fault, Delay):
            self._pause(fault.seconds)
        elif isinstance(fault, (Drop, Hang)) and not fault.after:
            if isinstance(fault, Hang):
                self._hang()
            return None
        elif isinstance(fault, (Trickle, RawAnswer)):
            return _Answer(fault.status, {}, fault=fault)
        elif isinstance(fault, (int, Status)):
            status = fault if isinstance(fault, Status) else Status(fault)
            extra = {} if status.retry_after is None else {"Retry-After": _header(status)}
            reason = status.message or _REASONS.get(status.status, "Error")
            return _error(status.status, reason, status.code, extra)
        if feedback is not None:
            answer = self._create_feedback(account, feedback["message"], form, path)
        elif method == "GET":
            answer = self._list_messages(account, path, query)
        else:
            answer = self._create_message(account, form, media)
        if isinstance(fault, (Drop, Hang)):  # after=True: Twilio acted, the answer is lost
            if answer.post is not None:
                with self._cond:
                    self._feedback.append(answer.post)
                    self._cond.notify_all()
            if isinstance(fault, Hang):
                self._hang()
            return None
        return answer

    def _authenticate(self, header: str) -> str | None:
        """The account the Basic credentials act as (an API key acts as its account)."""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        with self._cond:
            account = self._accounts.get(user)
            if account is not None:
                return user if secrets.compare_digest(account.token, password) else None
            for account in self._accounts.values():
                secret = account.keys.get(user)
                if secret is not None:
                    return account.sid if secrets.compare_digest(secret, password) else None
        return None

    def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)
        raise _Stopped

    def _hang(self) -> None:
        with self._cond:
            generation = self._generation
            self._cond.wait_for(lambda: self._stopping or self._generation != generation)

    def _generation_now(self) -> int:
        with self._cond:
            return self._generation

    def _trickle_wait(self, seconds: float, generation: int) -> bool:
        """Wait ``seconds``; False once released or stopping (the trickle ends)."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stopping and self._generation == generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)
        return False

    def _create_message(
        self, account: str, form: dict[str, str], media: tuple[str, ...]
    ) -> _Answer:
        if not form.get("To"):
            return _error(400, "A 'To' phone number is required.", 21604)
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _error(400, "A 'From' phone number is required.", 21603)
        if not (form.get("Body") or media or form.get("ContentSid")):
            return _error(400, "Message body is required.", 21602)
        sid = ("MM" if media else "SM") + secrets.token_hex(16)
        body = form.get("Body", "")
        message = Message(
            sid=sid,
            account_sid=account,
            to=form["To"],
            from_=form.get("From"),
            body=body,
            provide_feedback=form.get("ProvideFeedback", "").lower() == "true",
            messaging_service_sid=form.get("MessagingServiceSid"),
            media_urls=media,
            params=dict(form),
            date_created=_rfc2822(time.time()),
        )
        with self._cond:
            self._messages.append(message)
            self._known[sid] = account
            self._cond.notify_all()
        return _Answer(201, _message_json(message, listed=False))

    def _list_messages(self, account: str, path: str, query: dict[str, str]) -> _Answer:
        """ListMessage: newest first, filtered by To, From and the DateSent family, paged
        by PageSize, Page and PageToken, in Twilio's list envelope."""
        try:
            size = int(query.get("PageSize", _PAGE_SIZE))
            page = int(query.get("Page", 0))
            dates: dict[str, dt.date] = {
                name: _list_date(query[name])
                for name in ("DateSent", "DateSent<", "DateSent>")
                if name in query
            }
        except ValueError as exc:
            return _error(400, f"Invalid parameter: {exc}", 20001)
        if not 1 <= size <= _MAX_PAGE_SIZE or page < 0:
            return _error(400, f"PageSize must be 1-{_MAX_PAGE_SIZE} and Page >= 0", 20001)
        with self._cond:
            listed = [
                m
                for m in reversed(self._messages)
                if m.account_sid == account
                and query.get("To", m.to) == m.to
                and query.get("From", m.from_) == m.from_
                and _sent_on(m, dates)
            ]
        token = query.get("PageToken")
        start = page * size
        if token is not None:
            sids = [m.sid for m in listed]
            if token[:2] not in ("PA", "PB") or token[2:] not in sids:
                return _error(400, "Invalid PageToken", 20001)
            at = sids.index(token[2:])
            start = at + 1 if token.startswith("PA") else max(0, at - size)
        chunk = listed[start : start + size]
        kept = {name: query[name] for name in _LIST_PARAMS[:5] if name in query}

        def uri(number: int, page_token: str | None = None) -> str:
            params = {**kept, "PageSize": str(size), "Page": str(number)}
            if page_token is not None:
                params["PageToken"] = page_token
            return f"{path}?{urlencode(params)}"

        more = start + size < len(listed)
        return _Answer(
            200,
            {
                "end": start + len(chunk) - 1 if chunk else 0,
                "first_page_uri": uri(0),
                "next_page_uri": uri(page + 1, "PA" + chunk[-1].sid) if more and chunk else None,
                "page": page,
                "page_size": size,
                "previous_page_uri": (
                    uri(page - 1, "PB" + chunk[0].sid) if page > 0 and chunk else None
                ),
                "messages": [_message_json(m, listed=True) for m in chunk],
                "start": start,
                "uri": uri(page, token),
            },
        )

    def _create_feedback(
        self, account: str, message_sid: str, form: dict[str, str], path: str
    ) -> _Answer:
        with self._cond:
            if self._known.get(message_sid) != account:
                return _not_found(path)
        outcome = form.get("Outcome")
        if outcome is None:
            return _error(400, "Missing required parameter Outcome in the post body")
        if outcome not in ("confirmed", "unconfirmed"):
            return _error(400, "Invalid Outcome: must be 'confirmed' or 'unconfirmed'")
        now = time.time()
        stamp = _rfc2822(now)
        return _Answer(
            self.feedback_status,
            {
                "account_sid": account,
                "message_sid": message_sid,
                "outcome": outcome,
                "date_created": stamp,
                "date_updated": stamp,
                "uri": path,
            },
            post=FeedbackPost(account, message_sid, outcome, now),
        )


def _check_fault(fault: object) -> Fault:
    if isinstance(fault, bool) or not isinstance(fault, _FAULT_TYPES):
        raise TypeError(
            "a fault is a status code, Status, Drop, Hang, Delay, Trickle or RawAnswer, "
            f"not {fault!r}"
        )
    if isinstance(fault, int):
        Status(fault)  # validates the range
    return fault


def _error(
    status: int, message: str, code: int | None = None, headers: dict[str, str] | None = None
) -> _Answer:
    code = code or _CODES.get(status, 20000 + status)
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return _Answer(status, body, headers or {})


def _header(status: Status) -> str:
    value = status.retry_after
    return value if isinstance(value, str) else f"{value:g}"


def _message_json(message: Message, *, listed: bool) -> dict[str, Any]:
    """A Message resource as Twilio shows it. Created: ``queued``, not yet sent; listed
    later: ``sent``, at the time it was created (the emulator sends at once)."""
    uri = f"/2010-04-01/Accounts/{message.account_sid}/Messages/{message.sid}"
    return {
        "account_sid": message.account_sid,
        "api_version": "2010-04-01",
        "body": message.body,
        "date_created": message.date_created,
        "date_sent": message.date_created if listed else None,
        "date_updated": message.date_created,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": message.from_,
        "messaging_service_sid": message.messaging_service_sid,
        "num_media": str(len(message.media_urls)),
        "num_segments": str(_segments(message.body)),
        "price": None,
        "price_unit": None,
        "sid": message.sid,
        "status": "sent" if listed else "queued",
        "subresource_uris": {
            "media": f"{uri}/Media.json",
            "feedback": f"{uri}/Feedback.json",
        },
        "to": message.to,
        "uri": f"{uri}.json",
    }


_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")


def _list_date(value: str) -> dt.date:
    """A DateSent filter value as a GMT date. The spec documents ``YYYY-MM-DD`` and shows
    ISO date-times, ``MM/DD/YYYY HH:MM:SS TZ`` and RFC 2822 dates too; Twilio filters by
    day, so only the date counts."""
    text = value.strip()
    for pattern in _DATE_FORMATS:
        with contextlib.suppress(ValueError):
            return dt.datetime.strptime(text, pattern).date()
    with contextlib.suppress(ValueError):
        return dt.datetime.strptime(text.split(" ")[0], "%m/%d/%Y").date()
    with contextlib.suppress(TypeError, ValueError):
        parsed = email.utils.parsedate_to_datetime(text)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.timezone.utc)
        return parsed.date()
    raise ValueError(f"DateSent {value[:40]!r} is not a date")


def _sent_on(message: Message, dates: dict[str, dt.date]) -> bool:
    day = email.utils.parsedate_to_datetime(message.date_created).astimezone(dt.timezone.utc)
    sent = day.date()
    return (
        ("DateSent" not in dates or sent == dates["DateSent"])
        and ("DateSent<" not in dates or sent <= dates["DateSent<"])
        and ("DateSent>" not in dates or sent >= dates["DateSent>"])
    )


def _not_found(path: str) -> _Answer:
    return _error(404, f"The requested resource {path} was not found")


def _rfc2822(when: float) -> str:
    return email.utils.formatdate(when).replace("-0000", "+0000")


def _segments(body: str) -> int:
    """SMS segments: 160/153 characters in GSM-7 (approximated as ASCII), else 70/67."""
    if body.isascii():
        units, single, multi = len(body), 160, 153
    else:
        units, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else -(-units // multi)


class _Server(ThreadingHTTPServer):
    """Tracks open connections so :meth:`FakeTwilio.stop` can close them and join their
    threads; idle keep-alive connections would otherwise outlive the server."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: dict[socket.socket, threading.Thread] = {}
        self._open_lock = threading.Lock()
        self._closed = False

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="fake-twilio-request",
            daemon=True,
        )
        with self._open_lock:
            if self._closed:
                self.shutdown_request(request)
                return
            self._open[request] = thread
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.pop(request, None)

    def close_connections(self) -> list[threading.Thread]:
        with self._open_lock:
            self._closed = True
            open_now = dict(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return list(open_now.values())

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # vanished clients are expected
            super().handle_error(request, client_address)


def _make_handler(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeTwilio/1.0"
        sys_version = ""
        # Headers and body leave in two writes; with Nagle on, the body waits for the
        # client's delayed ACK (40 ms on Linux) and every answer comes that much late.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Silence http.server's per-request log line."""

        def _serve(self) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = fake._respond(self.command, self.path, headers, self._read_fields(headers))
            if answer is None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(answer.fault, Trickle):
                self._trickle(answer.fault)
                return
            raw = answer.fault
            payload = json.dumps(answer.body).encode() if raw is None else raw.body
            repeat = 1 if raw is None else raw.repeat
            content_type = "application/json; charset=utf-8" if raw is None else raw.content_type
            with contextlib.suppress(OSError):  # the client gave up (timeout, stop)
                self.send_response(answer.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload) * repeat))
                self.send_header("Twilio-Request-Id", "RQ" + secrets.token_hex(16))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    for _ in range(repeat):
                        self.wfile.write(payload)

        def _trickle(self, fault: Trickle) -> None:
            self.close_connection = True
            generation = fake._generation_now()
            with contextlib.suppress(OSError):
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(_MAX_BODY * 64))
                self.end_headers()
                self.wfile.write(b"{")
                self.wfile.flush()
                while fake._trickle_wait(fault.interval, generation):
                    self.wfile.write(b" ")
                    self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _read_fields(self, headers: dict[str, str]) -> dict[str, list[str]]:
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                length = -1
            if not 0 <= length <= _MAX_BODY or "transfer-encoding" in headers:
                self.close_connection = True  # the body cannot be delimited: read none of it
                return {}
            raw = self.rfile.read(length) if length else b""
            if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                return {}
            return parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)

        do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    return Handler
