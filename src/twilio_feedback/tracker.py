"""FeedbackTracker: the facade that ties tokens, store, Twilio and the reporter together."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from .confirm import Confirmer, hand_over, without_param
from .delivery import Delivery, delivery_for
from .errors import ConfigurationError, StorageError
from .flows import Blocking, Flow, StoreCall, Stores, arun, run
from .health import MAX_AGE, Health, check
from .insights import (
    MAX_SENDER_LENGTH,
    UNKNOWN_COUNTRY,
    UNKNOWN_SENDER,
    Group,
    Insights,
    check_country,
    check_sender,
    country_of,
)
from .insights import read as read_insights
from .lifecycle import close_at_exit
from .lookups import MAX_PENDING as MAX_LOOKUPS
from .lookups import SidLookups
from .records import ConfirmResult, Record, State
from .reporter import Drained, DrainProgress, OnFailed, OnReported, Reporter
from .settings import Settings
from .stores.base import AsyncStore, Store, check_store, store_from_url
from .stores.boundary import StoreBoundary
from .tokens import TokenSigner
from .twilio_api import TwilioAPI

if TYPE_CHECKING:
    from twilio.rest import Client
    from twilio.rest.api.v2010.account.message import MessageInstance

__all__ = ["FeedbackTracker", "Ticket"]

logger = logging.getLogger("twilio_feedback")

MESSAGE_SID_RE = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")
MAX_KEY_LENGTH = 512
LINK_PLACEHOLDER = "{link}"


@dataclass(frozen=True, slots=True)
class Ticket:
    """A fresh tracking id and its signed token, before the message is sent.

    Put :meth:`link` in the message, then :meth:`FeedbackTracker.bind` the ticket to the
    SID Twilio returns. ``repr()`` hides the token: it is a credential for one confirm.
    """

    tracking_id: str
    token: str
    param: str = "id"
    issued_at: float = 0.0

    def __repr__(self) -> str:
        return f"Ticket(tracking_id={self.tracking_id!r}, token='***', param={self.param!r})"

    def link(self, url: str) -> str:
        """``url`` with the token as its ``param`` query parameter.

        Adds the parameter or replaces an existing one; every other query parameter (byte
        for byte, in order) and the fragment are kept.
        """
        parts = urlsplit(url)
        kept = without_param(parts.query, self.param)
        token = f"{quote(self.param)}={self.token}"
        return urlunsplit(parts._replace(query=f"{kept}&{token}" if kept else token))


def key_tracking_id(key: str) -> str:
    """The tracking id of an app-chosen key (``"login:42"``): a hash, so keys that hold
    personal data (phone numbers, emails) are not written to the store as they are."""
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"key is longer than {MAX_KEY_LENGTH} characters")
    digest = hashlib.sha256(b"twilio-feedback.key\x00" + key.encode("utf-8")).digest()
    return "k" + base64.urlsafe_b64encode(digest[:15]).decode("ascii")


def _check_sid(message_sid: str) -> str:
    if not isinstance(message_sid, str) or not MESSAGE_SID_RE.match(message_sid):
        raise ValueError(
            f"message_sid {str(message_sid)[:40]!r} is not a Twilio message SID "
            "('SM' or 'MM' followed by 32 hex digits)"
        )
    return message_sid


class FeedbackTracker:
    """Issues tracking links, binds them to message SIDs, confirms, and reports to Twilio.

    Thread-safe; create one per process and share it. Without ``settings`` it reads
    :meth:`Settings.from_env`. Keyword ``overrides`` replace settings fields.
    ``on_reported(record)`` and ``on_failed(record, error)`` are called from the
    reporter's thread; an exception in them is logged and cannot stop delivery.

    ``client`` is your own ``twilio.rest.Client``: sends, feedback posts and SID lookups
    go through it (its credentials, base URL, edge, region and HTTP client), and
    ``api_base_url`` and the settings' credentials are not used for them. Without
    ``settings``, the account SID and credentials default to the client's.

    ``Settings.reporter`` decides who delivers: this process's threads (``thread``),
    nobody here (``off``: no thread at all; a worker or :meth:`drain` does it) or Celery
    (``celery``). ``off`` and ``celery`` refuse a ``memory://`` store, which no other
    process can read.

    Every sync method has an async twin (``send_async``, ...) for ASGI apps: the same code
    (:mod:`~twilio_feedback.flows`), with store I/O awaited and Twilio called in a worker
    thread. Store failures surface as :class:`~twilio_feedback.errors.StorageError`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: Client | None = None,
        on_reported: OnReported | None = None,
        on_failed: OnFailed | None = None,
        **overrides: Any,
    ) -> None:
        if settings is None:
            if client is not None:
                overrides = {**_credentials_of(client), **overrides}
            settings = Settings.from_env(**overrides)
        elif overrides:
            settings = settings.replace(**overrides)
        self.settings = settings
        self.signer = TokenSigner(
            settings.secret_keys, salt=settings.salt, max_skew=settings.clock_skew
        )
        if settings.reporter != "thread" and _in_memory(settings.store):
            raise ConfigurationError(
                f"reporter={settings.reporter!r} with a memory:// store: nothing could ever "
                "deliver the reports, since no other process can read this one's memory. "
                "Use a shared store (sqlite:///feedback.db, postgresql://..., redis://...), "
                "or reporter='thread'"
            )
        store = (
            store_from_url(settings.store) if isinstance(settings.store, str) else settings.store
        )
        check_store(store)  # a missing method is refused now, not found by a sweep later
        self.store: Store = StoreBoundary(store)
        """The store, behind the boundary that turns its failures into StorageError."""
        self._stores = Stores(self.store)
        self.api = TwilioAPI(settings, client=client)
        self._hooks = (on_reported, on_failed)
        self.reporter = self._new_reporter()
        """This process's reporter: running with ``reporter="thread"``, idle otherwise."""
        self.delivery: Delivery = delivery_for(settings, self.reporter)
        """Where a won confirmation goes (:mod:`twilio_feedback.delivery`)."""
        self.confirmer = Confirmer(settings, self.signer, self._stores, self.delivery)
        """The confirm step, shared with the middleware."""
        # Not a bound method of the tracker: the lookup thread must not keep it alive.
        self.sid_lookups = SidLookups(
            self.api,
            self.store,
            functools.partial(_report_if_confirmed, self.delivery),
            max_pending=0 if settings.reporter == "off" else MAX_LOOKUPS,
        )
        """Background lookups of SIDs after ambiguous send failures (see :meth:`send`)."""
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        # Registered weakly: an unreferenced tracker is collected and its threads stop.
        parts = (self.reporter, self.confirmer, self.sid_lookups)
        self._finalizer = weakref.finalize(self, _stop, *parts)
        self._finalizer.atexit = False
        self._forget_at_exit = close_at_exit(self)
        if settings.reporter == "thread":
            self.reporter.start()

    def _new_reporter(self, **changes: Any) -> Reporter:
        on_reported, on_failed = self._hooks
        settings = self.settings.replace(**changes) if changes else self.settings
        return Reporter(
            settings, self.store, self.api, on_reported=on_reported, on_failed=on_failed
        )

    def __repr__(self) -> str:
        return f"FeedbackTracker(account_sid={self.settings.account_sid!r})"

    @property
    def astore(self) -> AsyncStore:
        """The running event loop's async view of the store (native where the backend has
        one; one per loop, closed by :meth:`aclose` on that loop)."""
        return self._stores.async_

    # -- outgoing ------------------------------------------------------------------

    def ticket(self) -> Ticket:
        """A new tracking id and signed token (no I/O)."""
        tracking_id, token = self.signer.issue()
        return Ticket(tracking_id, token, self.settings.token_param, time.time())

    def _new_record(
        self,
        ticket: Ticket | None,
        key: str | None,
        message_sid: str | None,
        account_sid: str | None,
        country: str | None = None,
        sender: str | None = None,
    ) -> Record:
        if (ticket is None) == (key is None):
            raise ValueError("pass either a ticket or key=, not both and not neither")
        now = time.time()
        s = self.settings
        if ticket is not None:
            tracking_id = ticket.tracking_id
            expires_at = (ticket.issued_at or now) + s.token_max_age + s.clock_skew
        else:
            assert key is not None
            tracking_id = key_tracking_id(key)
            expires_at = now + s.token_max_age
        return Record(
            tracking_id,
            expires_at=expires_at,
            message_sid=_check_sid(message_sid) if message_sid is not None else None,
            account_sid=s.record_account(account_sid),
            created_at=now,
            country=(country or UNKNOWN_COUNTRY) if s.insights else None,
            sender=(sender or UNKNOWN_SENDER) if s.insights else None,
        )

    def _bind(
        self,
        ticket: Ticket | None,
        message_sid: str | None,
        key: str | None,
        account_sid: str | None,
        country: str | None,
        sender: str | None,
    ) -> Flow[Record]:
        if message_sid is None:
            raise ValueError("message_sid is required")
        if country is not None:
            check_country(country)
        if sender is not None:
            check_sender(sender)
        record = self._new_record(ticket, key, message_sid, account_sid, country, sender)
        self.sid_lookups.cancel(record.tracking_id)
        yield StoreCall("add", (record,))
        return record

    def bind(
        self,
        ticket: Ticket | None = None,
        message_sid: str | None = None,
        *,
        key: str | None = None,
        account_sid: str | None = None,
        country: str | None = None,
        sender: str | None = None,
    ) -> Record:
        """Remember that ``ticket`` (or ``key``) belongs to ``message_sid``.

        Binding a key again replaces the earlier mapping (an OTP resent under the same
        key); use one key per code where that matters. ``account_sid`` is the (sub)account
        that sent the message, when it is not the settings' own.

        ``country`` (the destination's ISO 3166 alpha-2 code, such as ``"US"``:
        :func:`~twilio_feedback.insights.country_of` gives it from a phone number) and
        ``sender`` (the ``from_`` number or messaging service SID, at most 64 characters)
        place the message in the conversion insights (:meth:`insights`); left out, they
        count as ``XX`` and ``unknown``. Anything else raises ``ValueError``.
        """
        flow = self._bind(ticket, message_sid, key, account_sid, country, sender)
        return run(flow, self._stores)

    async def bind_async(
        self,
        ticket: Ticket | None = None,
        message_sid: str | None = None,
        *,
        key: str | None = None,
        account_sid: str | None = None,
        country: str | None = None,
        sender: str | None = None,
    ) -> Record:
        """Async twin of :meth:`bind`."""
        flow = self._bind(ticket, message_sid, key, account_sid, country, sender)
        return await arun(flow, self._stores)

    def _send(
        self,
        to: str,
        body: str,
        from_: str | None,
        link: str | None,
        key: str | None,
        account_sid: str | None,
        params: dict[str, Any],
    ) -> Flow[MessageInstance]:
        if link is not None and key is not None:
            raise ValueError("pass link= (a confirm URL) or key= (a code typed back), not both")
        if link is None and key is None:
            raise ValueError("pass link= (the confirm URL to track) or key= (for a typed code)")
        ticket = None
        if link is not None:
            if LINK_PLACEHOLDER not in body:
                raise ValueError(
                    "body has no {link} placeholder: write where the tracking link goes, "
                    "e.g. body='Confirm your sign-in: {link}'"
                )
            ticket = self.ticket()
            link = ticket.link(link)
            body = body.replace(LINK_PLACEHOLDER, link)
        # The country is all the record keeps of the number.
        sender = from_ or params.get("messaging_service_sid")
        record = self._new_record(
            ticket,
            key,
            None,
            account_sid,
            country_of(to) if self.settings.insights else None,
            str(sender)[:MAX_SENDER_LENGTH] if sender else None,
        )
        if from_ is not None:
            params["from_"] = from_
        self.sid_lookups.cancel(record.tracking_id)  # a key sent again replaces its record
        # The record exists before Twilio answers, so a click racing the send is kept.
        yield StoreCall("add", (record,))
        refused: list[bool] = []

        def create() -> MessageInstance:
            try:
                return self.api.send_message(to=to, body=body, account_sid=account_sid, **params)
            except BaseException as exc:
                refused.append(self.api.not_created(exc))  # in the thread that sent
                raise

        try:
            message: MessageInstance = yield Blocking(create)
        except BaseException:
            if refused and refused[0]:
                try:
                    yield StoreCall("delete", (record.tracking_id,))
                except StorageError:
                    logger.warning(
                        "could not remove record %s after a refused send",
                        record.tracking_id,
                        extra={"event": "send_cleanup_failed", "tracking_id": record.tracking_id},
                    )
            else:
                self._after_failed_send(record, to, body, link, params)
            raise
        sid = str(message.sid)
        account = self.settings.record_account(message.account_sid or record.account_sid)
        try:
            bound = yield StoreCall("attach_sid", (record.tracking_id, sid, account))
        except StorageError:
            # The text is out: raising would make an app that retries send it twice. The
            # SID is attached in the background once the store answers.
            logger.warning(
                "the message for %s was sent, but the store could not record its SID; "
                "it is recorded in the background",
                record.tracking_id,
                extra={
                    "event": "sid_not_recorded",
                    "tracking_id": record.tracking_id,
                    "message_sid": sid,
                },
            )
            self.sid_lookups.attach_later(record, sid, account)
            return message
        if bound is not None and bound.state is State.CONFIRMED:
            # A click raced the send and was kept: now that the SID is known, report it.
            yield from hand_over(self.delivery, bound)
        return message

    def _after_failed_send(
        self, record: Record, to: str, text: str, link: str | None, params: dict[str, Any]
    ) -> None:
        """Twilio may have created the message: keep the record (the click counts) and
        look its SID up in the background."""
        logger.warning(
            "sending the message for %s failed, and Twilio may have created it: the record "
            "is kept and its SID looked up",
            record.tracking_id,
            extra={"event": "send_outcome_unknown", "tracking_id": record.tracking_id},
        )
        from_ = params.get("from_")
        self.sid_lookups.schedule(
            tracking_id=record.tracking_id,
            created_at=record.created_at,
            account_sid=str(record.account_sid or self.settings.account_sid),
            to=to,
            from_=str(from_) if from_ is not None else None,
            since=record.created_at - self.settings.clock_skew,
            contains=link,
            body=text if link is None else None,
        )

    def send(
        self,
        *,
        to: str,
        body: str,
        from_: str | None = None,
        link: str | None = None,
        key: str | None = None,
        account_sid: str | None = None,
        **params: Any,
    ) -> MessageInstance:
        """Send a tracked message and bind it; return Twilio's ``MessageInstance``.

        With ``link=``, ``{link}`` in ``body`` becomes the confirm URL with a fresh token;
        with ``key=``, the message is tracked under that key for :meth:`confirm`. Always
        sent with ``provide_feedback=True``. ``params`` go to ``messages.create``
        (``messaging_service_sid``, ``status_callback``, ...). For the conversion insights
        the record keeps the country of ``to`` (never the number) and the sender
        (``from_``, else ``messaging_service_sid``).

        Failures raise what Twilio's client raised, unchanged. When Twilio certainly did
        not create the message (a 4xx answer, or no connection made), no record is left
        behind. Otherwise (a timeout, a dropped connection, a 5xx) the message may exist:
        the record is kept, so the person's click counts, and the message's SID is looked
        up in the background (:class:`~twilio_feedback.lookups.SidLookups`) so the click
        can be reported. Sending again is the app's call: the person may get two texts.
        A store that fails before the send raises :class:`~twilio_feedback.errors.StorageError`
        (nothing was sent); once the text is out, a store failure never makes this raise.
        """
        return run(self._send(to, body, from_, link, key, account_sid, params), self._stores)

    async def send_async(
        self,
        *,
        to: str,
        body: str,
        from_: str | None = None,
        link: str | None = None,
        key: str | None = None,
        account_sid: str | None = None,
        **params: Any,
    ) -> MessageInstance:
        """Async twin of :meth:`send`; Twilio is called in a worker thread, the store
        through its async view. A cancelled call leaves the message's fate unknown: the
        record is kept and the SID looked up, as after a timeout."""
        flow = self._send(to, body, from_, link, key, account_sid, params)
        return await arun(flow, self._stores)

    # -- incoming ------------------------------------------------------------------

    def confirm_tracking_id(self, tracking_id: str) -> ConfirmResult:
        """Confirm by tracking id (already verified); one atomic store operation. When the
        store fails, the confirmation is kept in memory and applied once it answers
        (``deferred``), or, with the buffer full, refused (``error``)."""
        return run(self.confirmer.flow(tracking_id), self._stores)

    async def confirm_tracking_id_async(self, tracking_id: str) -> ConfirmResult:
        """Async twin of :meth:`confirm_tracking_id`."""
        return await arun(self.confirmer.flow(tracking_id), self._stores)

    def confirm_token(self, token: str | None) -> ConfirmResult:
        """Confirm the message behind a link's token. Never raises for bad input:
        forged, tampered, malformed and expired tokens are refused before any store I/O."""
        return self.confirmer.confirm_token(token)

    async def confirm_token_async(self, token: str | None) -> ConfirmResult:
        """Async twin of :meth:`confirm_token`."""
        return await self.confirmer.confirm_token_async(token)

    def confirm(self, *, key: str) -> ConfirmResult:
        """Confirm the message tracked under ``key`` (the code the user typed checked out)."""
        return self.confirm_tracking_id(key_tracking_id(key))

    async def confirm_async(self, *, key: str) -> ConfirmResult:
        """Async twin of :meth:`confirm`."""
        return await self.confirm_tracking_id_async(key_tracking_id(key))

    # -- lifecycle -----------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters of this process (a forked child starts from zero): confirm outcomes
        (``confirmed``, ``duplicate``, ``deferred``, ``invalid``, ``expired``,
        ``unknown``, ``error``); confirmations deferred during a store outage
        (``replayed``: applied once the store answered, ``deferred_dropped``: refused,
        the buffer full, ``deferred_pending``: waiting now); the reporter's
        (``reported``, ``retried``, ``failed``, ``dropped``, ``swept``, ``stuck``, and
        ``pending``: queued, in flight or waiting for a retry); and the SID lookups' after
        ambiguous send failures (``lookup_found``, ``lookup_given_up``, ``lookup_dropped``,
        ``lookup_pending``)."""
        counts = self.confirmer.stats()
        counts.update(self.reporter.stats())
        counts.update({f"lookup_{k}": v for k, v in self.sid_lookups.stats().items()})
        return counts

    def health(self, max_age: float = MAX_AGE) -> Health:
        """Whether delivery keeps up, for a health endpoint or a monitor: the age of the
        oldest unreported confirmation in the store (every process's), ``behind`` past
        ``max_age`` seconds, with the store's unreported and failed counts and this
        process's pending reports. Two store queries (on Redis, the counts SCAN the keys:
        call it every so often, not on every request); a store that fails gives
        ``unavailable`` rather than an exception."""
        pending = self.reporter.stats()["pending"] if self.settings.reporter == "thread" else None
        return check(self.store, max_age=max_age, pending=pending)

    async def health_async(self, max_age: float = MAX_AGE) -> Health:
        """Async twin of :meth:`health` (in a worker thread)."""
        return await asyncio.to_thread(self.health, max_age)

    def insights(
        self,
        since: date | datetime | timedelta | None = None,
        until: date | datetime | timedelta | None = None,
        by: Sequence[Group] = ("day", "country"),
    ) -> Insights:
        """Conversion insights of the messages sent from ``since`` to ``until`` (UTC days,
        both included), every process's: rows grouped ``by`` any of ``"day"``,
        ``"country"`` and ``"sender"``, each with messages sent, confirmed, reported and
        failed, the conversion rate and the time to confirm (p50, p90).

        ``since`` and ``until`` are dates, datetimes (their UTC day; a naive one is read as
        UTC) or timedeltas (that long ago: ``since=timedelta(days=7)``). By default the
        last 30 days, today included. A message counts on the day it was sent, whenever it
        was confirmed. A store that keeps no insights (a custom store without
        :class:`~twilio_feedback.stores.InsightsStore`) gives an :class:`Insights` with no
        rows, ``available=False`` and a ``note`` saying so; a store that fails raises
        :class:`~twilio_feedback.errors.StorageError`. One store query; for a report or a
        dashboard, not for every request.
        """
        now = datetime.now(timezone.utc)
        last = _utc_day(until, now) if until is not None else now.date()
        first = _utc_day(since, now) if since is not None else last - timedelta(days=29)
        if first > last:
            raise ValueError(f"since ({first}) is after until ({last})")
        found = read_insights(self.store, first, last, by)
        if found.available and not self.settings.insights:
            return dataclasses.replace(found, note="insights are off: new messages are not counted")
        return found

    async def insights_async(
        self,
        since: date | datetime | timedelta | None = None,
        until: date | datetime | timedelta | None = None,
        by: Sequence[Group] = ("day", "country"),
    ) -> Insights:
        """Async twin of :meth:`insights` (in a worker thread)."""
        return await asyncio.to_thread(self.insights, since, until, by)

    def flush(self, timeout: float | None = 5.0) -> int:
        """Wait up to ``timeout`` seconds for pending reports; return how many remain."""
        return self.reporter.flush(timeout)

    def drain(self, timeout: float = 60.0, progress: DrainProgress | None = None) -> Drained:
        """Deliver every due confirmation in the store now, within ``timeout`` seconds:
        what ``twilio-feedback drain`` does, for a scheduled job (a serverless function on
        a timer, a cron job, a Celery beat task).

        With ``reporter="thread"`` the running reporter does it. Otherwise a reporter runs
        for this call only: its threads start, deliver, and stop before it returns, so a
        tracker with ``reporter="off"`` runs no thread between two drains. What is left
        when the time is up stays ``confirmed``, for the next drain. Records another
        process holds under its lease are left to it. ``progress`` is called with
        ``(done, taken, failed)`` as reports complete.
        """
        if self.settings.reporter == "thread":
            return self.reporter.drain(timeout, progress)
        started = time.monotonic()
        reporter = self._new_reporter()
        try:
            drained = reporter.drain(timeout, progress)
        finally:
            # What was claimed and not started goes back to the store at once.
            reporter.close(max(0.0, timeout - (time.monotonic() - started)), release=True)
        return drained

    async def flush_async(self, timeout: float | None = 5.0) -> int:
        """Async twin of :meth:`flush` (waits in a worker thread)."""
        return await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = 5.0) -> int:
        """Make a last attempt to apply deferred confirmations, flush reports, stop the
        threads and close the store, all within ``timeout``. Idempotent. Returns how many
        reports were left pending (they stay ``confirmed`` in the store); deferred
        confirmations the store still could not take are lost, and logged."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        self._finalizer.detach()
        self._forget_at_exit()
        pending = _stop(self.reporter, self.confirmer, self.sid_lookups, timeout)
        with contextlib.suppress(StorageError):  # logged by the boundary
            self.store.close()
        return pending

    def _close_at_exit(self, timeout: float) -> None:
        if os.getpid() == self._pid:
            self.close(timeout)
        else:
            # A forked child: flush its reports, but leave the store (whose connections
            # it may share with the parent) to the parent.
            _stop(self.reporter, self.confirmer, self.sid_lookups, timeout)

    async def aclose(self, timeout: float | None = 5.0) -> int:
        """Async twin of :meth:`close`."""
        with contextlib.suppress(StorageError):  # logged by the boundary
            await self._stores.aclose()
        return await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> FeedbackTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> FeedbackTracker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _stop(
    reporter: Reporter,
    confirmer: Confirmer,
    lookups: SidLookups,
    timeout: float | None = 0.0,
) -> int:
    """Stop a tracker's threads within ``timeout``: SID lookups (1 s at most), deferred
    confirmations (a won replay is queued for the reporter), then the reporter. Returns the
    reports left."""
    started = time.monotonic()
    lookups.close(1.0 if timeout is None else min(1.0, timeout))
    confirmer.deferred.close(timeout)
    if timeout is not None:
        timeout = max(0.0, timeout - (time.monotonic() - started))
    return reporter.close(timeout)


def _utc_day(value: date | datetime | timedelta, now: datetime) -> date:
    """The UTC day of a date, a datetime (naive: UTC) or a timedelta ago."""
    if isinstance(value, timedelta):
        return (now - value).date()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.date()
        return value.astimezone(timezone.utc).date()
    if isinstance(value, date):
        return value
    raise TypeError(f"expected a date, datetime or timedelta, not {type(value).__name__}")


def _report_if_confirmed(delivery: Delivery, bound: Record | None) -> None:
    # A click that came before a SID lookup was kept; now that the SID is known, report it.
    if bound is not None and bound.state is State.CONFIRMED:
        delivery.submit(bound)


def _in_memory(store: str | Store) -> bool:
    """Whether the store lives in this process (``memory://``, or a store whose class says
    ``shared = False``): no other process can deliver its confirmations."""
    if isinstance(store, str):
        return urlsplit(store).scheme.lower() == "memory"
    return not getattr(store, "shared", True)


def _credentials_of(client: Client) -> dict[str, Any]:
    """Settings fields for a client's account and credentials (an API key or a token)."""
    username, password = client.username, client.password
    fields: dict[str, Any] = {"account_sid": client.account_sid}
    if isinstance(username, str) and username.startswith("SK"):
        fields.update(api_key_sid=username, api_key_secret=password)
    else:
        fields["auth_token"] = password
    return fields
