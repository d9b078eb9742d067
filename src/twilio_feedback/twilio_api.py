"""The only module that talks to Twilio.

It uses the official ``twilio`` client over its ``requests`` transport, pointed at
``Settings.api_base_url``, for sends and lookups. The feedback post, the reporter's hot
path, goes to the URL that client would use, with its headers and credentials, over
pooled keep-alive ``http.client`` connections (a fifth of the client's CPU per post), and
is classified by the same code. It turns every failure of a feedback post into a
:class:`~twilio_feedback.errors.FeedbackError` that says whether a retry can succeed.
One client per thread: ``requests`` sessions are not meant to be shared across threads;
the feedback post's connections are shared by the reporter's threads, one post at a time
each.

Every answer is streamed and bounded: at most :data:`MAX_RESPONSE_BYTES` of body are kept
(a longer answer is judged by its HTTP status alone), and the whole answer must arrive
within :data:`ANSWER_DEADLINE_FACTOR` x ``request_timeout`` of the call's start, so a
server that trickles its body is a network error, not a worker held forever. The HTTP
status decides success and failure, never a ``status`` field in the body.

An app may hand in its own ``twilio.rest.Client`` instead (``FeedbackTracker(client=)``):
then every call goes through that one client, shared by every thread, with its
credentials, base URL, edge, region and HTTP client. Each call still passes
``request_timeout`` as its timeout, and the same rules classify the answer (the HTTP
status decides; Retry-After; rejected credentials); the size cap and the answer deadline
belong to the library's own transport and are the client's HTTP client's business then
(the reporter's watchdog still replaces a worker stuck in one call).
"""

from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import logging
import math
import os
import re
import socket
import ssl
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlsplit

import requests
import requests.utils
import urllib3
from requests import Request, Session
from twilio.base import values
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.base.version import Version
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import InvalidHeader

from . import telemetry
from .errors import ConfigurationError, FeedbackError
from .settings import DEFAULT_API_BASE_URL

if TYPE_CHECKING:
    from twilio.rest.api.v2010.account.message import MessageInstance

    from .settings import Settings

__all__ = [
    "ANSWER_DEADLINE_FACTOR",
    "LOOKUP_LIMIT",
    "MAX_RESPONSE_BYTES",
    "TwilioAPI",
    "classify",
    "parse_retry_after",
]

logger = logging.getLogger("twilio_feedback.twilio")

_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_NO_ENVIRONMENT = {"TWILIO_FEEDBACK_ISOLATED": "1"}

MAX_RESPONSE_BYTES = 1 << 20
"""Bytes of an answer's body kept, at most (Twilio's answers are a few KB). A longer body is
dropped unread past this point, and the answer is judged by its HTTP status: a 2xx is a
success, anything else is classified as usual."""
ANSWER_DEADLINE_FACTOR = 2.0
"""A call's whole answer (status, headers and body) must be in within this many
``request_timeout`` of the call's start; past that the call fails as a (retryable) network
error. Connecting and each read are also bounded by ``request_timeout``. What this cannot
bound (headers that trickle in, a hanging DNS lookup) the reporter's watchdog covers."""
LOOKUP_LIMIT = 200
"""Messages examined, at most, by one :meth:`TwilioAPI.find_message` call (newest first)."""
_READ_CHUNK = 64 * 1024
_FEEDBACK_BODY = b"Outcome=confirmed"
_BREAKS = re.compile(r"[\r\n\0]")
_IDLE_CONNECTIONS = 10  # kept open per process, at most (4 reporter threads by default)
_NO_RETRY = urllib3.util.Retry(total=False, redirect=0)  # what requests' adapter does
# urllib3 caps Retry-After at 6 h by default; the reporter applies its own cap (the window).
_RETRY_AFTER = urllib3.util.Retry(total=0, retry_after_max=sys.maxsize)


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header as seconds to wait: a finite float >= 0, or ``None``.

    Seconds (``"2"``, ``"2.5"``, ``"0"``) are taken as they are; an HTTP date becomes the
    seconds from now until then (``0.0`` for a date in the past). Negative, NaN, infinite
    and unreadable values are ``None``: the caller falls back to its own backoff.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            return float(_RETRY_AFTER.parse_retry_after(text))
        except (InvalidHeader, ValueError, OverflowError):
            return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


class _HttpClient(TwilioHttpClient):  # type: ignore[misc]
    """The official client's ``requests`` transport, with bounded answers.

    Keeps the last answer's HTTP status and headers where an exception handler can read
    them (``TwilioRestException`` drops the headers, and 429 carries Retry-After there; an
    RFC 9457 ``TwilioServiceException`` takes its status from the body). Logs method and
    path only: query strings (a lookup's phone numbers) stay out of the logs.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.last_status: int | None = None
        self.last_headers: Any = None

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request and read its answer within the size and time bounds."""
        self.last_status = self.last_headers = None
        limit = float(self.timeout if timeout is None else timeout)
        deadline = time.monotonic() + ANSWER_DEADLINE_FACTOR * limit
        kwargs: dict[str, Any] = {
            "method": method.upper(),
            "url": url,
            "params": params,
            "headers": headers,
            "auth": auth,
            "hooks": self.request_hooks,
        }
        json_body = headers and headers.get("Content-Type") in (
            "application/json",
            "application/scim+json",
        )
        kwargs["json" if json_body else "data"] = data
        path = urlsplit(url).path
        logger.debug(
            "%s %s",
            kwargs["method"],
            path,
            extra={"event": "twilio_request", "method": kwargs["method"], "path": path},
        )
        session = self.session or Session()
        prepared = session.prepare_request(Request(**kwargs))
        environment = session.merge_environment_settings(
            prepared.url or url, self.proxy, None, None, None
        )
        environment["stream"] = True
        answer = session.send(
            prepared, allow_redirects=allow_redirects, timeout=limit, **environment
        )
        try:
            text = _read_body(answer, deadline, limit)
        finally:
            answer.close()  # a fully read answer already gave its connection back to the pool
        self.last_status, self.last_headers = answer.status_code, answer.headers
        return Response(answer.status_code, text, answer.headers)


def _read_body(answer: requests.Response, deadline: float, limit: float) -> str:
    raw = answer.raw
    sock = getattr(getattr(raw, "connection", None), "sock", None)

    def read1(size: int) -> bytes:
        return bytes(raw.read1(size, decode_content=True))

    data = _read_stream(read1, sock, answer.status_code, deadline, limit)
    return (data or b"").decode(answer.encoding or "utf-8", "replace")


def _read_stream(
    read1: Callable[[int], bytes], sock: Any, status: int, deadline: float, limit: float
) -> bytes | None:
    """An answer's body, or ``None`` past :data:`MAX_RESPONSE_BYTES` (the rest unread);
    every read bounded by what is left of ``deadline``."""
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise requests.ReadTimeout(
                    f"the answer was not complete {ANSWER_DEADLINE_FACTOR:g} x "
                    f"{limit:g}s after the call started"
                )
            if sock is not None:
                # Each read waits at most for what is left of the deadline.
                sock.settimeout(min(limit, remaining))
            data = read1(_READ_CHUNK)
            if not data:
                break
            size += len(data)
            if size > MAX_RESPONSE_BYTES:
                logger.warning(
                    "Twilio's answer (HTTP %d) is longer than %d bytes: its body is ignored",
                    status,
                    MAX_RESPONSE_BYTES,
                    extra={"event": "twilio_answer_too_long", "http_status": status},
                )
                return None
            chunks.append(data)
    except requests.RequestException:
        raise
    except (TimeoutError, urllib3.exceptions.ReadTimeoutError) as exc:
        raise requests.ReadTimeout(f"reading the answer timed out: {exc}") from exc
    except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
        raise requests.ConnectionError(f"reading the answer failed: {exc}") from exc
    return b"".join(chunks)


_Answer = tuple[int, Any, bytes | None]  # status, headers, body (None: too long)


class _FeedbackPoster:
    """The feedback POST without the official client's per-call machinery.

    Built once from a client configured from the settings, so it goes where that client
    goes, as it would (its host, edge and region rules, its headers, Basic auth with its
    credentials). Header and body leave in one write, over keep-alive connections kept
    for the reporter's threads (:class:`_Connections`); through a proxy, over urllib3's
    pool. The proxy and CA bundle requests would take from the environment (HTTPS_PROXY,
    NO_PROXY, REQUESTS_CA_BUNDLE) are read once, when the first post is made. A forked
    child opens its own connections: the parent's sockets are never shared.
    """

    def __init__(self, client: Client, timeout: float) -> None:
        version = client.api.v2010
        accounts = version.domain.absolute_url(version.relative_uri("Accounts"))
        self.prefix = client.get_hostname(accounts) + "/"  # .../2010-04-01/Accounts/
        self.timeout = timeout
        headers = client.get_headers("POST", None)
        user, password = client.auth
        credentials = f"{user}:{password}".encode("latin-1")
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        self.headers = headers
        self._transport: Callable[[str, float], _Answer] | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _current(self) -> Callable[[str, float], _Answer]:
        """This process's transport."""
        transport = self._transport
        if transport is not None and self._pid == os.getpid():
            return transport
        with self._lock:
            if self._transport is None or self._pid != os.getpid():
                self._transport, self._pid = self._new_transport(), os.getpid()
            return self._transport

    def _new_transport(self) -> Callable[[str, float], _Answer]:
        environ = os.environ
        bundle = (
            environ.get("REQUESTS_CA_BUNDLE")
            or environ.get("CURL_CA_BUNDLE")
            or requests.utils.extract_zipped_paths(requests.utils.DEFAULT_CA_BUNDLE_PATH)
        )
        proxy = requests.utils.select_proxy(
            self.prefix, requests.utils.get_environ_proxies(self.prefix)
        )
        if proxy:
            return _Proxied(self, proxy, bundle)
        return _Connections(self, bundle)

    def post(self, account_sid: str, message_sid: str) -> None:
        """POST ``Outcome=confirmed``; raise :class:`FeedbackError` on any failure."""
        path = quote(f"{account_sid}/Messages/{message_sid}/Feedback.json")
        deadline = time.monotonic() + ANSWER_DEADLINE_FACTOR * self.timeout
        if logger.isEnabledFor(logging.DEBUG):
            full = urlsplit(self.prefix).path + path
            logger.debug(
                "POST %s", full, extra={"event": "twilio_request", "method": "POST", "path": full}
            )
        try:
            status, headers, body = self._current()(path, deadline)
        except requests.RequestException as exc:
            raise classify(exc) from None
        if 200 <= status < 300:
            return
        text = (body or b"").decode("utf-8", "replace")
        uri = f"Accounts/{account_sid}/Messages/{message_sid}/Feedback.json"
        refusal = Version.exception(
            "POST", uri, Response(status, text, headers), "Unable to create record"
        )
        raise classify(refusal, headers, status)


class _Connections:
    """Keep-alive ``http.client`` connections to the API host, shared by threads: each
    post takes one (the most recently used), and gives it back once its answer is read
    whole. One that the server closed while idle is reopened before use."""

    def __init__(self, poster: _FeedbackPoster, bundle: str) -> None:
        target = urlsplit(poster.prefix)
        self.https = target.scheme == "https"
        self.host = target.hostname or ""
        self.port = target.port or (443 if self.https else 80)
        self.path = target.path
        self.timeout = poster.timeout
        # The request is the same bytes every time but for the path: its line and headers
        # are built once, and header, body and all leave in one write (http.client writes
        # the body apart, and each write to a busy peer costs a wake-up).
        default_port = 443 if self.https else 80
        host = self.host if ":" not in self.host else f"[{self.host}]"
        authority = host if self.port == default_port else f"{host}:{self.port}"
        fields = {"Host": authority, "Accept-Encoding": "identity", **poster.headers}
        fields["Content-Length"] = str(len(_FEEDBACK_BODY))
        if any(_BREAKS.search(f"{name}{value}") for name, value in fields.items()):
            # As http.client refuses them: a header must not smuggle another line in.
            raise ConfigurationError("a header of the feedback request contains a line break")
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        self._before_path = f"POST {self.path}".encode("ascii")
        self._after_path = f" HTTP/1.1\r\n{head}\r\n".encode("latin-1") + _FEEDBACK_BODY
        self.context: ssl.SSLContext | None = None
        if self.https:
            folder = os.path.isdir(bundle)
            self.context = ssl.create_default_context(
                cafile=None if folder else bundle, capath=bundle if folder else None
            )
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._idle)

    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            if conn.sock is None or not urllib3.util.wait_for_read(conn.sock, timeout=0.0):
                return conn
            conn.close()  # readable while idle: the server closed it
            return conn
        if self.context is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < _IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def __call__(self, path: str, deadline: float) -> _Answer:
        conn = self._take()
        limit = self.timeout
        if conn.sock is None:
            try:
                conn.connect()
            except TimeoutError as exc:
                raise requests.ConnectTimeout(f"connecting timed out: {exc}") from None
            except ssl.SSLError as exc:
                raise requests.exceptions.SSLError(f"TLS failed: {exc}") from None
            except OSError as exc:
                raise requests.ConnectionError(f"connecting failed: {exc}") from None
            opened = cast("socket.socket", conn.sock)  # connect() set it
            opened.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            conn.sock.settimeout(limit)
        sock = cast("socket.socket", conn.sock)
        answer = http.client.HTTPResponse(sock, method="POST")
        try:
            sock.sendall(b"".join((self._before_path, path.encode("ascii"), self._after_path)))
            answer.begin()
            body = _read_stream(answer.read1, sock, answer.status, deadline, limit)
        except BaseException as exc:
            answer.close()  # its file holds the socket open past conn.close()
            conn.close()
            error = _transport_error(exc)
            if error is exc:
                raise
            raise error from None
        answer.close()
        if body is None or answer.will_close:
            conn.close()  # a body left unread, or the server closes: not reused
        self._give_back(conn)
        return answer.status, answer.headers, body


def _transport_error(exc: BaseException) -> BaseException:
    """What a failed post raises: a ``requests`` error, as the client's path would."""
    if isinstance(exc, requests.RequestException):
        return exc
    if isinstance(exc, TimeoutError):
        return requests.ReadTimeout(f"the answer timed out: {exc}")
    if isinstance(exc, ssl.SSLError):
        return requests.exceptions.SSLError(f"TLS failed: {exc}")
    if isinstance(exc, http.client.HTTPException | OSError):
        return requests.ConnectionError(f"the connection failed: {exc!r}")
    return exc


def _close_all(connections: list[http.client.HTTPConnection]) -> None:
    while connections:
        connections.pop().close()


class _Proxied:
    """Posts through the environment's proxy, over urllib3's pool (which speaks to
    proxies: CONNECT tunnels for https, proxy credentials)."""

    def __init__(self, poster: _FeedbackPoster, proxy: str, bundle: str) -> None:
        proxy = requests.utils.prepend_scheme_if_needed(proxy, "http")
        user, password = requests.utils.get_auth_from_url(proxy)
        proxy_headers = (
            urllib3.make_headers(proxy_basic_auth=f"{user}:{password}") if user else None
        )
        tls: dict[str, Any] = (
            {"ca_cert_dir": bundle} if os.path.isdir(bundle) else {"ca_certs": bundle}
        )
        self.manager = urllib3.ProxyManager(
            proxy, proxy_headers=proxy_headers, maxsize=_IDLE_CONNECTIONS, block=False, **tls
        )
        self.prefix = poster.prefix
        self.headers = poster.headers
        self.timeout = poster.timeout
        self._timeout = urllib3.Timeout(connect=poster.timeout, read=poster.timeout)

    def __call__(self, path: str, deadline: float) -> _Answer:
        try:
            answer = self.manager.urlopen(
                "POST",
                self.prefix + path,
                body=_FEEDBACK_BODY,
                headers=self.headers,
                retries=_NO_RETRY,
                redirect=False,
                timeout=self._timeout,
                preload_content=False,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _as_requests_error(exc) from None
        sock = getattr(getattr(answer, "connection", None), "sock", None)

        def read1(size: int) -> bytes:
            return bytes(answer.read1(size, decode_content=True))

        try:
            body = _read_stream(read1, sock, answer.status, deadline, self.timeout)
        except requests.RequestException:
            answer.close()
            raise
        finally:
            if not answer.closed:
                answer.close()  # a body left unread: the connection cannot be reused
            answer.release_conn()
        return answer.status, answer.headers, body


def _as_requests_error(exc: BaseException) -> requests.RequestException:
    """The exception ``requests`` raises for this urllib3 failure, so both transports
    report a network error alike."""
    errors = urllib3.exceptions
    if isinstance(exc, errors.ProxyError):
        return requests.exceptions.ProxyError(str(exc))
    if isinstance(exc, errors.SSLError):
        return requests.exceptions.SSLError(str(exc))
    if isinstance(exc, errors.NewConnectionError):  # a subclass of ConnectTimeoutError
        return requests.ConnectionError(exc)
    if isinstance(exc, errors.ConnectTimeoutError):
        return requests.ConnectTimeout(str(exc))
    if isinstance(exc, errors.ReadTimeoutError | TimeoutError):
        return requests.ReadTimeout(str(exc))
    return requests.ConnectionError(str(exc))


def _error_fields(exc: BaseException) -> tuple[int | None, str]:
    """Twilio's error code and message, from the exception or the answer it carries."""
    code = getattr(exc, "code", None)
    if isinstance(exc, TwilioRestException):
        return code, exc.msg
    text = getattr(exc, "detail", None) or getattr(exc, "title", None)
    if code is None and len(exc.args) > 1 and isinstance(exc.args[1], Response):
        # A failed page (list) request: TwilioException("Unable to fetch page", response).
        try:
            body = json.loads(exc.args[1].text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            code, text = body.get("code"), body.get("message") or text
        text = text or str(exc.args[0])
    return code, str(text or exc)


def classify(exc: BaseException, headers: Any = None, status: int | None = None) -> FeedbackError:
    """Turn whatever a Twilio call raised into a :class:`FeedbackError`.

    ``status`` is the HTTP status of the answer, when there was one: it decides, whatever
    the body or the exception says. Network errors, 5xx, 408, 429 and rejected credentials
    (401, 403) are retryable; other 4xx are permanent and keep Twilio's error code and
    message. Nothing secret is copied into the message.
    """
    if status is None and isinstance(exc, TwilioException):
        found = getattr(exc, "status", None)
        status = found if isinstance(found, int) else None
    if isinstance(exc, TwilioException) and status is not None:
        code, text = _error_fields(exc)
        # Rejected credentials are the operator's to fix, not a verdict on the message.
        credentials = status in (401, 403)
        retryable = status >= 500 or status in _RETRYABLE_STATUSES or credentials
        return FeedbackError(
            f"Twilio answered {status}" + (f" (code {code})" if code else "") + f": {text}",
            retryable=retryable,
            credentials=credentials,
            status=status,
            code=code if isinstance(code, int) else None,
            retry_after=(
                parse_retry_after(headers.get("Retry-After"))
                if headers and status in (429, 503)
                else None
            ),
        )
    if isinstance(exc, requests.RequestException | OSError | TimeoutError):
        return FeedbackError(f"network error: {type(exc).__name__}", retryable=True)
    return FeedbackError(f"unexpected error: {type(exc).__name__}: {exc}", retryable=True)


def _unsent(exc: BaseException) -> bool:
    """True when the request certainly never reached Twilio: no connection was made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return isinstance(reason, urllib3.exceptions.NewConnectionError)  # DNS failures too
    return False


class TwilioAPI:
    """Sends tracked messages and looks messages up through the official client (one per
    thread, configured from the settings, or ``client``, the app's own), and posts
    feedback: straight over pooled connections, or through ``client`` when given."""

    def __init__(self, settings: Settings, *, client: Client | None = None) -> None:
        if client is not None:
            if not isinstance(client, Client):
                raise ConfigurationError(
                    f"client must be a twilio.rest.Client, not {type(client).__name__}"
                )
            if getattr(client.http_client, "is_async", False):
                raise ConfigurationError(
                    "the client's HTTP client is asynchronous (AsyncTwilioHttpClient): "
                    "give the tracker a client with a synchronous one (the default "
                    "TwilioHttpClient); the tracker runs Twilio calls in threads"
                )
        self.settings = settings
        self.given = client
        """The app's own client, or ``None``."""
        self._local = threading.local()
        self._poster: _FeedbackPoster | None = None
        self._poster_lock = threading.Lock()

    def client(self) -> Client:
        """The app's client, or this thread's, configured from the settings."""
        if self.given is not None:
            return self.given
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            s = self.settings
            http = _HttpClient(timeout=s.request_timeout)
            # The client reads TWILIO_EDGE / TWILIO_REGION from `environment or os.environ`
            # and rewrites the host with them. That is right for api.twilio.com, and wrong
            # for any other base URL (it turns 127.0.0.1 into 127.sydney.0.0.1): there, hand
            # it a mapping that is not empty (an empty one would fall back to os.environ).
            environment = None if s.api_base_url == DEFAULT_API_BASE_URL else _NO_ENVIRONMENT
            if s.api_key_sid:
                client = Client(
                    s.api_key_sid,
                    s.api_key_secret,
                    s.account_sid,
                    http_client=http,
                    environment=environment,
                )
            else:
                client = Client(
                    s.account_sid, s.auth_token, http_client=http, environment=environment
                )
            client.api.base_url = s.api_base_url.rstrip("/")
            self._local.client = client
            self._local.http = http
        return client

    def _http(self) -> _HttpClient | None:
        """This thread's bounded transport (``None`` with the app's own client)."""
        if self.given is not None:
            return None
        self.client()
        http: _HttpClient = self._local.http
        return http

    def _last_answer(self) -> tuple[int | None, Any]:
        """The HTTP status and headers of this thread's last answer, where known."""
        http = self._http()
        return (None, None) if http is None else (http.last_status, http.last_headers)

    def send_message(self, *, account_sid: str | None = None, **params: Any) -> MessageInstance:
        """Create a message with ``provide_feedback=True``; Twilio's own exceptions and
        network errors pass through unchanged. ``params`` are those of
        ``client.messages.create``.

        A 2xx answer whose body cannot be read (not JSON, too long) raises a
        non-retryable :class:`FeedbackError` with that ``status``: Twilio accepted the
        message, but its SID is unknown. Call :meth:`not_created` with whatever this
        raised, in the same thread, to learn whether the message certainly does not exist.
        """
        params["provide_feedback"] = True
        client = self.client()
        http = self._http()
        if http is not None:
            http.last_status = None  # not_created() must not see an earlier answer
        messages = client.api.v2010.accounts(account_sid or self.settings.account_sid).messages
        try:
            message: MessageInstance = messages.create(**params)
        except Exception:
            status, _ = self._last_answer()
            if status is None or not 200 <= status < 300:
                raise
            raise FeedbackError(
                f"Twilio accepted the message (HTTP {status}) but its answer could not be "
                "read: its SID is unknown",
                retryable=False,
                status=status,
            ) from None
        return message

    def not_created(self, exc: BaseException) -> bool:
        """Whether the message whose :meth:`send_message` raised ``exc`` certainly does not
        exist: Twilio answered 4xx, or no connection was made. Anything else (a timeout, a
        dropped connection, a 5xx, an unreadable 2xx) leaves it unknown. Call it in the
        thread that called :meth:`send_message`."""
        status, _ = self._last_answer()
        if status is None and self.given is not None:
            found = getattr(exc, "status", None)
            status = found if isinstance(found, int) else None
        if isinstance(exc, TwilioException) and status is not None:
            return 400 <= status < 500
        return _unsent(exc)

    @telemetry.timed_post
    def post_feedback(self, account_sid: str, message_sid: str) -> None:
        """POST ``Outcome=confirmed`` for one message; raise :class:`FeedbackError` on failure.

        Any 2xx is success, whatever its body (the spec says 200, Twilio answered 201
        until mid-2025). Only ``confirmed`` is ever sent. The answer's status and headers
        (Retry-After) decide. Configured from the settings, the post goes straight through
        a pooled connection to where the official client would send it, with its headers
        and credentials (the client's own request path costs about five times the CPU);
        with the app's own client, through that client's request path.
        """
        if self.given is None:
            poster = self._poster
            if poster is None:
                poster = self._make_poster()
            poster.post(account_sid, message_sid)
            return
        version = self.given.api.v2010
        uri = f"Accounts/{account_sid}/Messages/{message_sid}/Feedback.json"
        try:
            answer = version.request(
                "POST",
                uri,
                data={"Outcome": "confirmed"},
                timeout=self.settings.request_timeout,
            )
        except Exception as exc:
            raise classify(exc) from None
        if 200 <= answer.status_code < 300:
            return
        refusal = Version.exception("POST", uri, answer, "Unable to create record")
        raise classify(refusal, answer.headers, answer.status_code)

    def _make_poster(self) -> _FeedbackPoster:
        with self._poster_lock:
            if self._poster is None:
                self._poster = _FeedbackPoster(self.client(), self.settings.request_timeout)
            return self._poster

    def find_message(
        self,
        *,
        account_sid: str,
        to: str,
        since: float,
        from_: str | None = None,
        body: str | None = None,
        contains: str | None = None,
    ) -> str | None:
        """The SID of a message Twilio lists as sent to ``to`` (and from ``from_``, when
        given), created at or after ``since`` (epoch seconds), whose body is ``body`` or
        contains ``contains``; ``None`` when none is listed (yet).

        One ``GET .../Messages.json`` with ``To``, ``From`` and ``DateSent>`` (the day of
        ``since``), following pages up to :data:`LOOKUP_LIMIT` messages, newest first; the
        newest match wins. Raises :class:`FeedbackError` when the lookup fails.
        """
        if (body is None) == (contains is None):
            raise ValueError("pass body= (the exact text) or contains= (a unique part)")
        client = self.client()
        messages = client.api.v2010.accounts(account_sid).messages
        day = dt.datetime.fromtimestamp(since, dt.timezone.utc).date()
        try:
            for message in messages.stream(
                to=to,
                from_=values.unset if from_ is None else from_,
                date_sent_after=day,
                limit=LOOKUP_LIMIT,
                page_size=50,
            ):
                created = message.date_created
                if created is not None and created.timestamp() < since:
                    continue
                text = message.body or ""
                if text == body or (contains is not None and contains in text):
                    return str(message.sid)
        except Exception as exc:
            status, headers = self._last_answer()
            raise classify(exc, headers, status) from None
        return None
