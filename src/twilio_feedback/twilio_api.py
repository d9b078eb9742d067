"""The only module that talks to Twilio.

It uses the official ``twilio`` client over its ``requests`` transport, pointed at
``Settings.api_base_url``, and turns every failure of a feedback post into a
:class:`~twilio_feedback.errors.FeedbackError` that says whether a retry can succeed.
One client per thread: ``requests`` sessions are not meant to be shared across threads,
and the reporter posts from several.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from .errors import FeedbackError

if TYPE_CHECKING:
    from twilio.rest.api.v2010.account.message import MessageInstance

    from .settings import Settings

__all__ = ["TwilioAPI", "classify"]

logger = logging.getLogger("twilio_feedback.twilio")

_RETRYABLE_STATUSES = frozenset({408, 425, 429})
DEFAULT_BASE_URL = "https://api.twilio.com"
_NO_ENVIRONMENT = {"TWILIO_FEEDBACK_ISOLATED": "1"}


class _HttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Keeps the last response's headers where an exception handler can read them
    (``TwilioRestException`` drops them, and 429 carries Retry-After there)."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.last_headers: Any = None
        response = super().request(*args, **kwargs)
        self.last_headers = response.headers
        return response


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        # An HTTP date: Twilio sends seconds; treat anything else as "a while".
        return None


def classify(exc: BaseException, headers: Any = None) -> FeedbackError:
    """Turn whatever a Twilio call raised into a :class:`FeedbackError`.

    Network errors, 5xx, 408, 429 and rejected credentials (401, 403) are retryable; other
    4xx are permanent and keep Twilio's error code and message. Nothing secret is copied
    into the message.
    """
    if isinstance(exc, FeedbackError):
        return exc
    status = getattr(exc, "status", None)
    if isinstance(exc, TwilioException) and isinstance(status, int):
        code = getattr(exc, "code", None)
        text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or str(exc)
        if isinstance(exc, TwilioRestException):
            text = exc.msg
        # Rejected credentials are the operator's to fix, not a verdict on the message.
        credentials = status in (401, 403)
        retryable = status >= 500 or status in _RETRYABLE_STATUSES or credentials
        return FeedbackError(
            f"Twilio answered {status}" + (f" (code {code})" if code else "") + f": {text}",
            retryable=retryable,
            credentials=credentials,
            status=status,
            code=code if isinstance(code, int) else None,
            retry_after=_retry_after(headers) if status in (429, 503) else None,
        )
    if isinstance(exc, requests.RequestException | OSError | TimeoutError):
        return FeedbackError(f"network error: {type(exc).__name__}", retryable=True)
    return FeedbackError(f"unexpected error: {type(exc).__name__}: {exc}", retryable=True)


class TwilioAPI:
    """Sends tracked messages and posts feedback through the official client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local = threading.local()

    def client(self) -> Client:
        """This thread's ``twilio`` client, configured from the settings."""
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            s = self.settings
            http = _HttpClient(timeout=s.request_timeout)
            # The client reads TWILIO_EDGE / TWILIO_REGION from `environment or os.environ`
            # and rewrites the host with them. That is right for api.twilio.com, and wrong
            # for any other base URL (it turns 127.0.0.1 into 127.sydney.0.0.1): there, hand
            # it a mapping that is not empty (an empty one would fall back to os.environ).
            environment = None if s.api_base_url == DEFAULT_BASE_URL else _NO_ENVIRONMENT
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

    def send_message(self, *, account_sid: str | None = None, **params: Any) -> MessageInstance:
        """Create a message with ``provide_feedback=True``; Twilio's own exceptions pass
        through unchanged. ``params`` are those of ``client.messages.create``."""
        params["provide_feedback"] = True
        client = self.client()
        messages = client.api.v2010.accounts(account_sid or self.settings.account_sid).messages
        message: MessageInstance = messages.create(**params)
        return message

    def post_feedback(self, account_sid: str, message_sid: str) -> None:
        """POST ``Outcome=confirmed`` for one message; raise :class:`FeedbackError` on failure.

        Any 2xx is success: the spec says 200, Twilio answered 201 until mid-2025.
        Only ``confirmed`` is ever sent.
        """
        client = self.client()
        try:
            client.api.v2010.accounts(account_sid).messages(message_sid).feedback.create(
                outcome="confirmed"
            )
        except Exception as exc:
            raise classify(exc, getattr(self._local.http, "last_headers", None)) from None
