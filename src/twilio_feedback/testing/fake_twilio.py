"""FakeTwilio: a real HTTP server on 127.0.0.1 that speaks the two Twilio endpoints this
library uses, with fault injection.

It follows Twilio's OpenAPI description of ``POST .../Messages.json`` and
``POST .../Messages/{MessageSid}/Feedback.json``: the same paths, Basic auth (account SID
and auth token, or API key and secret, a parent account acting on its subaccounts), form
fields, status codes, and error bodies with ``code``, ``message``, ``more_info`` and
``status``. Every request is recorded; faults (latency, error statuses, 429 with
Retry-After, dropped connections, hanging) are injected on demand.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import json
import re
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "Delay",
    "Drop",
    "FakeTwilio",
    "Fault",
    "FeedbackPost",
    "Hang",
    "Message",
    "RecordedRequest",
    "Status",
]

Endpoint = Literal["feedback", "messages", "any"]

_ACCOUNT = r"(?P<account>[^/]+)"
_MESSAGES_RE = re.compile(rf"^/2010-04-01/Accounts/{_ACCOUNT}/Messages\.json$")
_FEEDBACK_RE = re.compile(
    rf"^/2010-04-01/Accounts/{_ACCOUNT}/Messages/(?P<message>[^/]+)/Feedback\.json$"
)
ACCOUNT_SID_RE = re.compile(r"^AC[0-9a-fA-F]{32}$")
MESSAGE_SID_RE = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")

_DEFAULT_CODES = {400: 20001, 401: 20003, 403: 20003, 404: 20404, 405: 20004, 429: 20429}
_DEFAULT_TEXT = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP status and a Twilio error body (``Retry-After`` if given)."""

    status: int
    code: int | None = None
    message: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class Drop:
    """Close the connection without answering."""


@dataclass(frozen=True)
class Hang:
    """Never answer, until :meth:`FakeTwilio.release` or :meth:`FakeTwilio.stop`."""


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` (interruptible by stop), then answer normally."""

    seconds: float


Fault = int | Status | Drop | Hang | Delay
"""An injected fault: a bare status code or one of the fault classes."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it (the Authorization header is not kept)."""

    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    status: int | None
    time: float


@dataclass(frozen=True)
class Message:
    """A message created through the emulator."""

    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    provide_feedback: bool
    messaging_service_sid: str | None
    params: dict[str, str]
    date_created: str


@dataclass(frozen=True)
class FeedbackPost:
    """An accepted feedback post."""

    account_sid: str
    message_sid: str
    outcome: str
    time: float


@dataclass
class _Account:
    sid: str
    token: str
    parent: str | None = None
    keys: dict[str, str] = field(default_factory=dict)


def _hex_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(when: float) -> str:
    return email.utils.formatdate(when, usegmt=False).replace("-0000", "+0000")


class _Stopped(Exception):
    pass


class FakeTwilio:
    """A Twilio API emulator serving real HTTP on ``127.0.0.1``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Point the library at
    :attr:`base_url` (``Settings(api_base_url=fake.base_url, account_sid=fake.account_sid,
    auth_token=fake.auth_token)``), or get an official client with :meth:`client`.
    ``feedback_status`` is the success status of feedback posts: 200 as the current spec
    says, or 201 as Twilio answered until mid-2025.
    """

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        feedback_status: int = 200,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._lock = threading.Condition()
        self._accounts: dict[str, _Account] = {}
        self.account_sid, self.auth_token = self.add_account(account_sid, auth_token)
        self.feedback_status = feedback_status
        self.latency: float = 0.0
        """Seconds every request waits before it is answered."""
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        """Requests received and not yet answered (a hanging one counts)."""
        self.messages: list[Message] = []
        self._message_accounts: dict[str, str] = {}
        self.feedback: list[FeedbackPost] = []
        self._faults: dict[str, deque[Fault]] = {"feedback": deque(), "messages": deque()}
        self._always: dict[str, Fault | None] = {"feedback": None, "messages": None}
        self._stopped = threading.Event()
        self._release = threading.Event()
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> FakeTwilio:
        """Bind a free port and serve in a background thread."""
        if self._server is not None:
            return self
        handler = _make_handler(self)
        self._server = _Server(self._address, handler)
        self._server.daemon_threads = True
        self._stopped.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-twilio",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging and delayed requests are let go at once."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopped.set()
        self._release.set()
        with self._lock:
            self._lock.notify_all()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FakeTwilio(base_url={self.base_url!r}, account_sid={self.account_sid!r})"

    @property
    def port(self) -> int:
        """The TCP port served."""
        if self._server is None:
            raise RuntimeError("FakeTwilio is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: use it as ``api_base_url``."""
        return f"http://127.0.0.1:{self.port}"

    # -- accounts ------------------------------------------------------------------

    def add_account(
        self, sid: str | None = None, token: str | None = None, *, parent: str | None = None
    ) -> tuple[str, str]:
        """Create an account (a subaccount of ``parent`` if given); return ``(sid, token)``."""
        sid = sid or _hex_sid("AC")
        token = token or secrets.token_hex(16)
        if parent is not None and parent not in self._accounts:
            raise ValueError("unknown parent account")
        with self._lock:
            self._accounts[sid] = _Account(sid, token, parent)
        return sid, token

    def add_messages(self, count: int, account_sid: str | None = None) -> list[str]:
        """Seed ``count`` messages without HTTP (for load tests); return their SIDs."""
        account = account_sid or self.account_sid
        stamp = _rfc2822(time.time())
        made = [
            Message(
                _hex_sid("SM"), account, "+15558675310", "+15017122661", "", True, None, {}, stamp
            )
            for _ in range(count)
        ]
        with self._lock:
            self.messages.extend(made)
            self._message_accounts.update((m.sid, account) for m in made)
        return [m.sid for m in made]

    def add_api_key(self, account_sid: str | None = None) -> tuple[str, str]:
        """Create an API key on an account (default: the main one); return ``(sid, secret)``."""
        key_sid, secret = _hex_sid("SK"), secrets.token_hex(16)
        with self._lock:
            self._accounts[account_sid or self.account_sid].keys[key_sid] = secret
        return key_sid, secret

    def client(self, **kwargs: Any) -> Any:
        """An official ``twilio.rest.Client`` pointed at this emulator.

        Built with ``environment={}`` so ``TWILIO_EDGE`` / ``TWILIO_REGION`` cannot rewrite
        the host to a real Twilio edge.
        """
        from twilio.rest import Client

        kwargs.setdefault("environment", {})
        client = Client(self.account_sid, self.auth_token, **kwargs)
        client.api.base_url = self.base_url
        return client

    # -- faults --------------------------------------------------------------------

    def _endpoints(self, endpoint: Endpoint) -> list[str]:
        return ["feedback", "messages"] if endpoint == "any" else [endpoint]

    def fail_next(self, *faults: Fault, endpoint: Endpoint = "feedback") -> None:
        """Queue faults consumed one per request, e.g. ``fail_next(503, 503)``."""
        with self._lock:
            for name in self._endpoints(endpoint):
                self._faults[name].extend(faults)

    def fail_always(self, fault: Fault, *, endpoint: Endpoint = "feedback") -> None:
        """Apply ``fault`` to every request until :meth:`clear_faults`."""
        with self._lock:
            for name in self._endpoints(endpoint):
                self._always[name] = fault

    def clear_faults(self) -> None:
        """Remove every queued and permanent fault and let hanging requests go."""
        with self._lock:
            for name in self._faults:
                self._faults[name].clear()
                self._always[name] = None
        self.release()

    def release(self) -> None:
        """Let every hanging request go (they then get a 503)."""
        self._release.set()
        self._release = threading.Event()

    def reset(self) -> None:
        """Forget recordings and faults (accounts and messages' existence stay)."""
        self.clear_faults()
        with self._lock:
            self.requests.clear()
            self.feedback.clear()
            self.latency = 0.0

    def _next_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            if self._faults[endpoint]:
                return self._faults[endpoint].popleft()
            return self._always[endpoint]

    # -- waiting -------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` (called under the recording lock) is true."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
            return True

    def wait_for_feedback(self, count: int = 1, timeout: float = 5.0) -> list[FeedbackPost]:
        """Wait until at least ``count`` feedback posts were accepted; return them all.

        Raises :class:`TimeoutError` saying how many arrived.
        """
        if not self.wait_for(lambda: len(self.feedback) >= count, timeout):
            raise TimeoutError(
                f"expected {count} feedback post(s) within {timeout}s, got {len(self.feedback)}"
            )
        with self._lock:
            return list(self.feedback)

    def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``count`` requests were recorded; return them all."""
        if not self.wait_for(lambda: len(self.requests) >= count, timeout):
            raise TimeoutError(
                f"expected {count} request(s) within {timeout}s, got {len(self.requests)}"
            )
        with self._lock:
            return list(self.requests)

    # -- request handling (called from handler threads) ------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)
            self._lock.notify_all()

    def _wait(self, seconds: float) -> None:
        if seconds > 0 and self._stopped.wait(seconds):
            raise _Stopped

    def _authorized(self, header: str | None, account_sid: str) -> int:
        """0 if allowed, else 401 or 403."""
        if not header or not header.startswith("Basic "):
            return 401
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return 401
        with self._lock:
            owner: str | None = None
            if user in self._accounts and secrets.compare_digest(
                self._accounts[user].token, password
            ):
                owner = user
            else:
                for account in self._accounts.values():
                    secret = account.keys.get(user)
                    if secret is not None and secrets.compare_digest(secret, password):
                        owner = account.sid
            if owner is None:
                return 401
            target = self._accounts.get(account_sid)
            if owner == account_sid or (target is not None and target.parent == owner):
                return 0
            return 403

    def handle(
        self, method: str, path: str, form: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        """Route one request: return ``(status, json body, extra headers)``; status 0 with
        no body means drop the connection."""
        if self.latency:
            self._wait(self.latency)
        path = urlsplit(path).path
        feedback = _FEEDBACK_RE.match(path)
        messages = _MESSAGES_RE.match(path)
        match = feedback or messages
        if match is None:
            return _error(404, f"The requested resource {path} was not found")
        if method != "POST":
            return _error(405, "Method not allowed")
        account_sid = match.group("account")
        denied = self._authorized(headers.get("authorization"), account_sid)
        if denied:
            return _error(denied, "Authenticate")
        endpoint = "feedback" if feedback else "messages"
        fault = self._next_fault(endpoint)
        if fault is not None:
            answer = self._apply(fault)
            if answer is not None:
                return answer
        if feedback:
            return self._create_feedback(account_sid, feedback.group("message"), form)
        return self._create_message(account_sid, form)

    def _apply(self, fault: Fault) -> tuple[int, dict[str, Any] | None, dict[str, str]] | None:
        if isinstance(fault, int):
            fault = Status(fault)
        if isinstance(fault, Status):
            extra = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            status, body, _ = _error(
                fault.status,
                fault.message or _DEFAULT_TEXT.get(fault.status, "Error"),
                fault.code,
            )
            return status, body, extra
        if isinstance(fault, Drop):
            return 0, None, {}
        if isinstance(fault, Hang):
            release = self._release
            while not release.wait(0.05):
                if self._stopped.is_set():
                    raise _Stopped
            return _error(503, "Service Unavailable")
        self._wait(fault.seconds)
        return None

    def _create_message(
        self, account_sid: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        if not form.get("To"):
            return _error(400, "A 'To' phone number is required.", 21604)
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _error(400, "A 'From' phone number is required.", 21603)
        if not (form.get("Body") or form.get("MediaUrl") or form.get("ContentSid")):
            return _error(400, "Message body is required.", 21602)
        now = time.time()
        sid = _hex_sid("MM" if form.get("MediaUrl") else "SM")
        body = form.get("Body", "")
        message = Message(
            sid=sid,
            account_sid=account_sid,
            to=form["To"],
            from_=form.get("From"),
            body=body,
            provide_feedback=form.get("ProvideFeedback", "").lower() == "true",
            messaging_service_sid=form.get("MessagingServiceSid"),
            params=dict(form),
            date_created=_rfc2822(now),
        )
        with self._lock:
            self.messages.append(message)
            self._message_accounts[sid] = account_sid
        uri = f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}"
        return (
            201,
            {
                "account_sid": account_sid,
                "api_version": "2010-04-01",
                "body": body,
                "date_created": message.date_created,
                "date_sent": None,
                "date_updated": message.date_created,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": message.from_,
                "messaging_service_sid": message.messaging_service_sid,
                "num_media": "1" if form.get("MediaUrl") else "0",
                "num_segments": str(max(1, -(-len(body) // 153) if len(body) > 160 else 1)),
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "queued",
                "subresource_uris": {
                    "media": f"{uri}/Media.json",
                    "feedback": f"{uri}/Feedback.json",
                },
                "to": message.to,
                "uri": f"{uri}.json",
            },
            {},
        )

    def _create_feedback(
        self, account_sid: str, message_sid: str, form: dict[str, str]
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        with self._lock:
            known = self._message_accounts.get(message_sid) == account_sid
        if not (ACCOUNT_SID_RE.match(account_sid) and MESSAGE_SID_RE.match(message_sid)):
            known = False
        if not known:
            return _error(
                404,
                f"The requested resource /2010-04-01/Accounts/{account_sid}/Messages/"
                f"{message_sid}/Feedback.json was not found",
            )
        outcome = form.get("Outcome", "")
        if outcome not in ("confirmed", "unconfirmed"):
            return _error(
                400, f"Invalid value '{outcome[:40]}' for Outcome: confirmed or unconfirmed", 21610
            )
        now = time.time()
        with self._lock:
            self.feedback.append(FeedbackPost(account_sid, message_sid, outcome, now))
            self._lock.notify_all()
        stamp = _rfc2822(now)
        return (
            self.feedback_status,
            {
                "account_sid": account_sid,
                "message_sid": message_sid,
                "outcome": outcome,
                "date_created": stamp,
                "date_updated": stamp,
                "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{message_sid}/Feedback.json",
            },
            {},
        )


def _error(
    status: int, message: str, code: int | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    code = code or _DEFAULT_CODES.get(status, 20000 + status)
    return (
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        {},
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that vanish (killed processes, timeouts) are part of the tests."""


def _make_handler(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeTwilio/1.0"
        # Headers and body go out in two writes; with Nagle on, the body would wait for
        # the client's delayed ACK (40 ms on Linux) and every answer would be that late.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the per-request log."""

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            with fake._lock:
                fake.in_flight += 1
                fake._lock.notify_all()
            try:
                status, body, extra = fake.handle(self.command, self.path, form, headers)
            except _Stopped:
                status, body, extra = 0, None, {}
            finally:
                with fake._lock:
                    fake.in_flight -= 1
            kept = {k: v for k, v in headers.items() if k != "authorization"}
            fake._record(
                RecordedRequest(self.command, self.path, form, kept, status or None, time.time())
            )
            if status == 0:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            payload = json.dumps(body).encode()
            with contextlib.suppress(OSError):  # the client gave up (timeout, stop)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Twilio-Request-Id", _hex_sid("RQ"))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        do_POST = do_GET = do_PUT = do_DELETE = _serve

    return Handler
