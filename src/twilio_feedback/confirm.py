"""The protocol-free decision for one request: is it a confirmation, and what follows?

The ASGI and WSGI adapters hand :class:`ConfirmGate` what they read from the request
(path, method, query string, a few headers, and for a small form POST the body) and do
what the returned :class:`Decision` says. Every rule lives here, so neither adapter holds
logic the other would have to repeat.

For one request on a confirm path:

1. methods outside ``confirm_methods``, and always ``HEAD`` and ``OPTIONS``: ``ignored``;
2. link-preview bots and scanners (by user agent, see :mod:`twilio_feedback.bots`):
   ``ignored``, before any token check or store access;
3. the token: the first non-empty value of the ``token_param`` parameter in the query
   string, else in an urlencoded POST form of at most :data:`MAX_FORM_BYTES` (one rule,
   :meth:`ConfirmGate.token_from_query` and :meth:`ConfirmGate.token_from_form`);
4. the tracker confirms it (signature and age first, then one atomic store operation);
5. the app runs with the result, unless the settings ask for a redirect instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from .bots import BotMatcher
from .records import ConfirmResult

if TYPE_CHECKING:
    from .tracker import FeedbackTracker

__all__ = [
    "FORM_CONTENT_TYPE",
    "MAX_BODY_MESSAGES",
    "MAX_FIELDS",
    "MAX_FORM_BYTES",
    "NEVER_CONFIRM",
    "ConfirmGate",
    "Decision",
    "Headers",
]

logger = logging.getLogger("twilio_feedback")

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024
"""A POST body larger than this is not read for a token (it reaches the app untouched)."""
MAX_FIELDS = 1000
"""A query string or form with more fields than this is not searched for the token (the
request is ``invalid``, as if it had none): the same limit as the standard library's
``max_num_fields`` guard, without its exception."""
MAX_BODY_MESSAGES = 256
"""ASGI body messages read for a form, at most. A body still incomplete after this many
(a trickle of tiny or empty chunks) is not searched for the token; what was read is replayed
to the app, and the rest reaches it as it comes."""
NEVER_CONFIRM = frozenset({"HEAD", "OPTIONS"})
"""Methods that never confirm, whatever ``confirm_methods`` says: browsers, proxies and
bots send them without a person acting."""
REDIRECT_STATUS = 303
REDIRECT_STATUS_LINE = "303 See Other"

Headers = Mapping[str, str]
"""Request headers by lower-case name (only ``user-agent``, ``content-type`` and
``content-length`` are read)."""

IGNORED_METHOD = ConfirmResult("ignored", reason="method does not confirm")
IGNORED_BOT = ConfirmResult("ignored", reason="link preview or scanner")
INTERNAL_ERROR = ConfirmResult("error", reason="internal error")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request on a confirm path.

    Pass the request to the app with ``result`` attached and ``query`` as its query
    string, or, when ``redirect`` is set, answer with a redirect there instead.
    """

    result: ConfirmResult
    query: str
    redirect: str | None = None

    @property
    def status(self) -> int:
        """HTTP status of the redirect answer (303 See Other: a GET follows, even after
        a POST)."""
        return REDIRECT_STATUS

    @property
    def status_line(self) -> str:
        """:attr:`status` with its reason phrase, for WSGI's ``start_response``."""
        return REDIRECT_STATUS_LINE

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Headers of the redirect answer, which both adapters send as they are (names in
        lower case, as ASGI asks; values printable ASCII, as the settings check).

        The confirm URL holds a live token: the answer must not be cached, and the page
        it leads to must not send the URL on as a ``Referer``.
        """
        return (
            ("location", self.redirect or "/"),
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
            ("content-type", "text/plain"),
            ("content-length", "0"),
        )


class ConfirmGate:
    """The rules of the middleware, shared by both adapters.

    ``paths`` replaces ``confirm_paths`` / ``path_match`` with a compiled pattern that must
    match the whole path; ``bots`` replaces the user-agent matcher built from the settings
    (``bot_user_agents``, ``default_bot_list``).
    """

    def __init__(
        self,
        tracker: FeedbackTracker,
        *,
        paths: re.Pattern[str] | None = None,
        bots: BotMatcher | None = None,
    ) -> None:
        s = tracker.settings
        self.tracker = tracker
        self.settings = s
        self.param = s.token_param
        self.methods = frozenset(s.confirm_methods) - NEVER_CONFIRM
        self.bots = bots or BotMatcher.default(s.bot_user_agents, maintained=s.default_bot_list)
        self.paths: Container[object]
        """The confirm paths, for ``path in gate.paths``. With exact matching it is a
        frozenset, so a request on any other path costs one hash lookup."""
        if paths is not None:
            self.paths = _Pattern(paths)
        elif s.path_match == "prefix":
            self.paths = _Prefixes(tuple(s.confirm_paths))
        else:
            self.paths = frozenset(s.confirm_paths)

    def matches(self, path: str) -> bool:
        """Whether ``path`` is a confirm path."""
        return path in self.paths

    # -- reading the request ---------------------------------------------------------

    def token_from_query(self, query: str) -> str | None:
        """The first non-empty value of the token parameter in a raw query string, or
        ``None`` (also for more than :data:`MAX_FIELDS` fields)."""
        return self._first_value(query, "query string")

    def token_from_form(self, body: bytes) -> str | None:
        """The first non-empty value of the token field in an urlencoded form body, or
        ``None``: the rule of :meth:`token_from_query`."""
        return self._first_value(body.decode("utf-8", "replace"), "form")

    def _first_value(self, text: str, where: str) -> str | None:
        # One rule for the query and the form: an empty value (``?id=``, a blank form
        # field) is no token, so the next place is looked at. ``parse_qsl`` would raise
        # past its field limit, and it parses every field to find one.
        if text.count("&") >= MAX_FIELDS:
            logger.debug("confirm: %s of more than %d fields not searched", where, MAX_FIELDS)
            return None
        param = self.param
        for piece in text.split("&"):
            name, _, value = piece.partition("=")
            if value and (name == param or ("%" in name and unquote_plus(name) == param)):
                return unquote_plus(value)
        return None

    def form_length(self, method: str, query: str, headers: Headers) -> int:
        """How many body bytes the adapter should read for the token: the declared length
        of a small urlencoded POST form, on a request that may confirm and carries no
        token in its query; ``0`` (read nothing, the body is left alone) otherwise."""
        if method != "POST" or method not in self.methods:
            return 0
        content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type != FORM_CONTENT_TYPE:
            return 0
        declared = headers.get("content-length", "").strip()
        if not (declared.isascii() and declared.isdigit()):
            return 0
        # int() raises on thousands of digits: anything past 9 is too long anyway.
        digits = declared.lstrip("0")
        if len(digits) > 9:
            return 0
        length = int(digits or "0")
        if not 0 < length <= MAX_FORM_BYTES:
            return 0
        if self.bots.is_bot(headers.get("user-agent")) or self.token_from_query(query) is not None:
            return 0
        return length

    # -- deciding ----------------------------------------------------------------------

    def _screen(
        self, method: str, query: str, headers: Headers, body: bytes | None
    ) -> ConfirmResult | str | None:
        """An ``ignored`` result for a visit that must not confirm, else the token."""
        if method not in self.methods:
            logger.debug("confirm ignored: method %s", method[:16])
            return IGNORED_METHOD
        user_agent = headers.get("user-agent")
        if self.bots.is_bot(user_agent):
            logger.debug("confirm ignored: link preview or scanner %r", (user_agent or "")[:120])
            return IGNORED_BOT
        token = self.token_from_query(query)
        if token is None and body is not None:
            token = self.token_from_form(body)
        return token

    def decide(
        self, method: str, query: str, headers: Headers, body: bytes | None = None
    ) -> Decision:
        """Decide for one request on a confirm path, confirming in this thread (WSGI).

        ``body`` is the form body when :meth:`form_length` asked for it. Never raises:
        bad input is a result, and an unexpected failure is logged and becomes ``error``.
        """
        try:
            screened = self._screen(method, query, headers, body)
            if isinstance(screened, ConfirmResult):
                return self._decision(method, query, screened)
            return self._decision(method, query, self.tracker.confirm_token(screened))
        except Exception:
            logger.exception("confirming a request failed")
            return self._decision(method, query, INTERNAL_ERROR)

    async def decide_async(
        self, method: str, query: str, headers: Headers, body: bytes | None = None
    ) -> Decision:
        """Async twin of :meth:`decide`: store I/O never blocks the event loop (ASGI)."""
        try:
            screened = self._screen(method, query, headers, body)
            if isinstance(screened, ConfirmResult):
                return self._decision(method, query, screened)
            result = await self.tracker.confirm_token_async(screened)
            return self._decision(method, query, result)
        except Exception:
            logger.exception("confirming a request failed")
            return self._decision(method, query, INTERNAL_ERROR)

    def _decision(self, method: str, query: str, result: ConfirmResult) -> Decision:
        if self.settings.hide_token:
            query = self.strip_token(query)
        return Decision(result, query, self.redirect_for(result, method))

    # -- answering ---------------------------------------------------------------------

    def strip_token(self, query: str) -> str:
        """``query`` without the token parameter (``hide_token``); every other piece is
        kept byte for byte, in order."""
        param = self.param
        if param not in query and "%" not in query:
            return query
        return "&".join(
            piece
            for piece in query.split("&")
            if piece and unquote_plus(piece.partition("=")[0]) != param
        )

    def strip_token_from_uri(self, uri: str) -> str:
        """A request URI (``/confirm?id=...&a=1``) without the token parameter."""
        path, mark, query = uri.partition("?")
        if not mark:
            return uri
        query = self.strip_token(query)
        return f"{path}?{query}" if query else path

    def redirect_for(self, result: ConfirmResult, method: str = "GET") -> str | None:
        """Where the middleware answers with a redirect itself, or ``None`` to let the app
        answer. Only with ``confirmed_redirect`` set, and never for ``OPTIONS`` (CORS
        preflights are the app's)."""
        s = self.settings
        if s.confirmed_redirect is None or method == "OPTIONS":
            return None
        # Targets come from the settings only, never from the request: a confirm link
        # cannot be turned into an open redirect.
        if result.ok or result.status == "ignored":  # ok: deferred counts too
            return s.confirmed_redirect
        if result.status == "expired":
            return s.expired_redirect or s.invalid_redirect or s.confirmed_redirect
        return s.invalid_redirect or s.confirmed_redirect


class _Prefixes:
    """Container of the paths that start with one of ``prefixes``."""

    __slots__ = ("prefixes",)

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        self.prefixes = prefixes

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path.startswith(self.prefixes)


class _Pattern:
    """Container of the paths a compiled pattern matches whole."""

    __slots__ = ("pattern",)

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.pattern.fullmatch(path) is not None
