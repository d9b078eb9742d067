"""The confirmation's home: the protocol-free decision for one request, and the confirm
step itself.

The ASGI and WSGI adapters hand :class:`ConfirmGate` what they read from the request
(path, method, query string, a few headers, and for a small form POST the body) and do
what the returned :class:`Decision` says. Every rule lives here, so neither adapter holds
logic the other would have to repeat. The gate hands the token to :class:`Confirmer`, the
one place a confirmation happens (the tracker's ``confirm*`` methods use it too): the walk
of a confirm request is adapter -> this module -> the store -> the reporter -> Twilio.

For one request on a confirm path:

1. methods outside ``confirm_methods``, and always ``HEAD`` and ``OPTIONS``: ``ignored``;
2. link-preview bots and scanners (by user agent, see :mod:`twilio_feedback.bots`), and
   test clients unless ``count_test_clients``: ``ignored``, before any token check or
   store access;
3. the token: the first non-empty value of the ``token_param`` parameter in the query
   string, else in an urlencoded POST form of at most :data:`MAX_FORM_BYTES` (one rule,
   :meth:`ConfirmGate.token_from_query` and :meth:`ConfirmGate.token_from_form`);
4. :class:`Confirmer` confirms it (signature and age first, then one atomic store
   operation; the winner is handed to the tracker's delivery: the reporter, the outbox or
   Celery, as ``Settings.reporter`` says);
5. the app runs with the result, unless the settings ask for a redirect instead.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

from itsdangerous import BadSignature

from . import telemetry
from .bots import BotMatcher
from .deferred import DeferredConfirmations
from .flows import Blocking, Flow, StoreCall, Stores, arun, run
from .lifecycle import ProcessLocal
from .records import ConfirmResult, Record, State
from .tokens import ExpiredToken

if TYPE_CHECKING:
    from .delivery import Delivery
    from .settings import Settings
    from .stores.base import Store
    from .tokens import TokenSigner
    from .tracker import FeedbackTracker

__all__ = [
    "FORM_CONTENT_TYPE",
    "MAX_BODY_MESSAGES",
    "MAX_FIELDS",
    "MAX_FORM_BYTES",
    "NEVER_CONFIRM",
    "OUTCOMES",
    "ConfirmGate",
    "Confirmer",
    "Decision",
    "Headers",
    "hand_over",
    "without_param",
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

OUTCOMES = ("confirmed", "duplicate", "deferred", "invalid", "expired", "unknown", "error")
"""The confirm outcomes :meth:`Confirmer.stats` counts."""

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
        self.confirmer = tracker.confirmer
        self.settings = s
        self.param = s.token_param
        self.methods = frozenset(s.confirm_methods) - NEVER_CONFIRM
        self.bots = bots or BotMatcher.default(
            s.bot_user_agents,
            maintained=s.default_bot_list,
            count_test_clients=s.count_test_clients,
        )
        self.paths: Container[object]
        """The confirm paths, for ``path in gate.paths``. With exact matching it is a
        frozenset, so a request on any other path costs one hash lookup."""
        if paths is not None:
            self.paths = _Pattern(paths)
        elif s.path_match == "prefix":
            self.paths = _Prefixes(tuple(s.confirm_paths))
        else:
            self.paths = frozenset(s.confirm_paths)

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
            logger.debug(
                "confirm: %s of more than %d fields not searched",
                where,
                MAX_FIELDS,
                extra={"event": "confirm_fields_over_limit", "source": where},
            )
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
            logger.debug(
                "confirm ignored: method %s",
                method[:16],
                extra={
                    "event": "confirm_ignored",
                    "outcome": "ignored",
                    "reason": "method",
                    "method": method[:16],
                },
            )
            return telemetry.confirm_outcome(IGNORED_METHOD)
        user_agent = headers.get("user-agent")
        if self.bots.is_bot(user_agent):
            logger.debug(
                "confirm ignored: link preview or scanner %r",
                (user_agent or "")[:120],
                extra={
                    "event": "confirm_ignored",
                    "outcome": "ignored",
                    "reason": "bot",
                    "user_agent": (user_agent or "")[:120],
                },
            )
            return telemetry.confirm_outcome(IGNORED_BOT)
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
            return self._decision(method, query, self.confirmer.confirm_token(screened))
        except Exception:
            logger.exception(
                "confirming a request failed", extra={"event": "confirm_failed", "outcome": "error"}
            )
            return self._decision(method, query, telemetry.confirm_outcome(INTERNAL_ERROR))

    async def decide_async(
        self, method: str, query: str, headers: Headers, body: bytes | None = None
    ) -> Decision:
        """Async twin of :meth:`decide`: store I/O never blocks the event loop (ASGI)."""
        try:
            screened = self._screen(method, query, headers, body)
            if isinstance(screened, ConfirmResult):
                return self._decision(method, query, screened)
            result = await self.confirmer.confirm_token_async(screened)
            return self._decision(method, query, result)
        except Exception:
            logger.exception(
                "confirming a request failed", extra={"event": "confirm_failed", "outcome": "error"}
            )
            return self._decision(method, query, telemetry.confirm_outcome(INTERNAL_ERROR))

    def _decision(self, method: str, query: str, result: ConfirmResult) -> Decision:
        if self.settings.hide_token:
            query = self.strip_token(query)
        return Decision(result, query, self.redirect_for(result, method))

    # -- answering ---------------------------------------------------------------------

    def strip_token(self, query: str) -> str:
        """``query`` without the token parameter (``hide_token``); every other piece is
        kept byte for byte, in order."""
        return without_param(query, self.param)

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


def without_param(query: str, param: str) -> str:
    """``query`` without any ``param`` field (its name compared percent-decoded); every
    other field is kept byte for byte, in order. The one rule for taking the token out of
    a query: :meth:`ConfirmGate.strip_token` and :meth:`Ticket.link` use it."""
    if param not in query and "%" not in query:
        return query
    return "&".join(
        piece
        for piece in query.split("&")
        if piece and unquote_plus(piece.partition("=")[0]) != param
    )


def confirm_kwargs(settings: Settings, confirmed_at: float, now: float) -> dict[str, float]:
    """Arguments of :meth:`Store.confirm` for a confirmation made at ``confirmed_at`` and
    applied at ``now`` (later, for one deferred during a store outage): the confirming
    process's lease (none with ``reporter="off"``: nobody here reports it, so the next
    sweep of a worker or a drain takes it at once), and a life long enough for the retry
    window."""
    lease = 0.0 if settings.reporter == "off" else settings.lease_seconds
    return {
        "now": confirmed_at,
        "lease_until": now + lease,
        "keep_until": now + settings.keep_seconds,
    }


class Confirmer(ProcessLocal):
    """The confirm step: a token, or a tracking id the app vouches for, becomes a
    :class:`~twilio_feedback.ConfirmResult`.

    Signature and age first (a forgery costs one HMAC and no I/O), then one atomic store
    operation; the one caller that wins hands the record to the tracker's
    :class:`~twilio_feedback.delivery.Delivery`. When the store fails, a verified
    confirmation is kept in memory and applied once it answers (``deferred``;
    :class:`~twilio_feedback.deferred.DeferredConfirmations`), or, with that buffer full,
    refused (``error``). With ``reporter="off"`` nothing is kept (no thread may replay
    it): the answer is ``error``, as with ``deferred_size=0``. Protocol-free: the
    middleware's gate and the tracker's ``confirm*`` methods both call it. Counts outcomes
    per process.
    """

    def __init__(
        self, settings: Settings, signer: TokenSigner, stores: Stores, delivery: Delivery
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.stores = stores
        self.delivery = delivery
        # Holds the store and delivery, not this object: its thread keeps nothing else
        # alive.
        self.deferred = DeferredConfirmations(
            functools.partial(_apply_deferred, settings, stores.sync, delivery),
            limit=0 if settings.reporter == "off" else settings.deferred_size,
        )
        super().__init__()

    def _init_state(self) -> None:
        super()._init_state()
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(OUTCOMES, 0)

    def _count(self, result: ConfirmResult) -> ConfirmResult:
        with self._lock:
            self._counts[result.status] += 1
        return telemetry.confirm_outcome(result)

    def verify(self, token: str | None) -> ConfirmResult | str:
        """The tracking id of a genuine, unexpired token, or the result that refuses it
        (``invalid``, ``expired``): no I/O."""
        if not token:
            return self._count(ConfirmResult("invalid", reason="no token"))
        try:
            return self.signer.verify(token, self.settings.token_max_age).tracking_id
        except ExpiredToken as exc:
            logger.debug(
                "confirm refused: expired token for %s",
                exc.payload,
                extra={
                    "event": "confirm_expired",
                    "outcome": "expired",
                    "tracking_id": str(exc.payload),
                },
            )
            return self._count(ConfirmResult("expired", tracking_id=str(exc.payload)))
        except BadSignature as exc:
            logger.debug(
                "confirm refused: invalid token (%s)",
                exc.message,
                extra={"event": "confirm_invalid", "outcome": "invalid", "reason": exc.message},
            )
            return self._count(ConfirmResult("invalid", reason=exc.message))

    def flow(self, tracking_id: str) -> Flow[ConfirmResult]:
        """Confirm a verified tracking id: one atomic store operation."""
        now = time.time()
        try:
            won, record = yield StoreCall(
                "confirm", (tracking_id,), confirm_kwargs(self.settings, now, now)
            )
        except Exception:
            # Only verified confirmations get here (a genuine token, or a key the app
            # vouches for): keeping them cannot be abused to confirm anything. The store
            # boundary has logged the failure.
            if self.deferred.add(tracking_id, now):
                logger.debug(
                    "store unavailable: confirmation of %s deferred",
                    tracking_id,
                    extra={
                        "event": "confirm_deferred",
                        "outcome": "deferred",
                        "tracking_id": tracking_id,
                    },
                )
                reason = "store unavailable; kept in memory"
                return self._count(ConfirmResult("deferred", tracking_id, reason=reason))
            return self._count(ConfirmResult("error", tracking_id, reason="store unavailable"))
        result = self._decide(tracking_id, won, record, now)
        if won and record is not None and record.message_sid is not None:
            yield from hand_over(self.delivery, record)
        return self._count(result)

    def _decide(
        self, tracking_id: str, won: bool, record: Record | None, now: float
    ) -> ConfirmResult:
        if won:
            assert record is not None
            return ConfirmResult(
                "confirmed", tracking_id, record.message_sid, country=record.country
            )
        if record is None:
            logger.debug(
                "confirm refused: no record for %s",
                tracking_id,
                extra={
                    "event": "confirm_unknown",
                    "outcome": "unknown",
                    "tracking_id": tracking_id,
                },
            )
            return ConfirmResult("unknown", tracking_id, reason="no such record")
        if record.state is State.PENDING and record.expires_at <= now:
            return ConfirmResult("expired", tracking_id, record.message_sid, country=record.country)
        return ConfirmResult("duplicate", tracking_id, record.message_sid, country=record.country)

    def confirm_token(self, token: str | None) -> ConfirmResult:
        """Confirm the message behind a link's token; never raises for bad input."""
        verified = self.verify(token)
        if isinstance(verified, ConfirmResult):
            return verified
        return run(self.flow(verified), self.stores)

    async def confirm_token_async(self, token: str | None) -> ConfirmResult:
        """Async twin of :meth:`confirm_token`: the same flow, store I/O awaited."""
        verified = self.verify(token)
        if isinstance(verified, ConfirmResult):
            return verified
        return await arun(self.flow(verified), self.stores)

    def stats(self) -> dict[str, int]:
        """Outcomes counted in this process (:data:`OUTCOMES`), and the deferred buffer's
        counters."""
        with self._lock:
            counts = dict(self._counts)
        counts.update(self.deferred.stats())
        return counts


def hand_over(delivery: Delivery, record: Record) -> Flow[None]:
    """Hand a won record to ``delivery`` within a flow: as a blocking step (off the event
    loop, under :func:`~twilio_feedback.flows.arun`) when the delivery may wait on I/O. A
    delivery that fails costs nothing: the record stays ``confirmed`` for a sweep."""
    if not delivery.blocking:
        delivery.submit(record)
        return
    try:
        yield Blocking(functools.partial(delivery.submit, record))
    except Exception:
        logger.exception(
            "handing %s over for delivery failed",
            record.tracking_id,
            extra={"event": "delivery_handover_failed", "tracking_id": record.tracking_id},
        )


def _apply_deferred(
    settings: Settings, store: Store, delivery: Delivery, tracking_id: str, confirmed_at: float
) -> None:
    """Apply a confirmation deferred during a store outage: the same atomic confirm, as of
    the moment the person acted (a link that expired since still counts); raises while the
    store still fails."""
    won, record = store.confirm(tracking_id, **confirm_kwargs(settings, confirmed_at, time.time()))
    if not won and record is not None and _confirmed_by(record, confirmed_at):
        # An earlier attempt of this very confirmation was applied, and the store's answer
        # was lost (a connection cut as the server restarts): the record carries this
        # confirmation's own time. Ours to report, or it would wait for the lease to end.
        won = True
    if won:
        assert record is not None
        logger.debug(
            "deferred confirmation of %s applied",
            tracking_id,
            extra={
                "event": "deferred_confirmation_applied",
                "tracking_id": tracking_id,
                "message_sid": record.message_sid,
            },
        )
        if record.message_sid is not None:
            delivery.submit(record)
    else:
        found = "no record" if record is None else f"a {record.state} record"
        logger.debug(
            "deferred confirmation of %s found %s: nothing to do",
            tracking_id,
            found,
            extra={
                "event": "deferred_confirmation_moot",
                "tracking_id": tracking_id,
                "state": None if record is None else record.state.value,
            },
        )


_CONFIRMED_AT_PRECISION = 0.002
"""How far a store may round a confirmation time (to the millisecond, or a float's
digits): a record whose ``confirmed_at`` is this close to a deferred confirmation's own
time was confirmed by it."""


def _confirmed_by(record: Record, confirmed_at: float) -> bool:
    return (
        record.state is State.CONFIRMED
        and record.confirmed_at is not None
        and abs(record.confirmed_at - confirmed_at) <= _CONFIRMED_AT_PRECISION
    )


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
