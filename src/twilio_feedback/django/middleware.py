"""The Django middleware: confirms on the configured paths, then runs the view as usual.

.. code-block:: python

    MIDDLEWARE = [..., "twilio_feedback.django.FeedbackMiddleware"]

Sync and async capable: Django runs it without an adapter under WSGI, ASGI, the test
``Client`` and ``AsyncClient``. The view sees the :class:`~twilio_feedback.ConfirmResult`
as ``request.twilio_feedback`` (or :func:`confirm_result`), ``None`` on other paths.
Confirm paths are compared with ``request.path_info``: the path below the project's
script prefix, as Django's URL patterns see it. The rules are those of
:class:`~twilio_feedback.confirm.ConfirmGate`; the middleware only reads the request and
does what the gate's :class:`~twilio_feedback.confirm.Decision` says.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from ..confirm import ConfirmGate, Decision, Headers
from ..records import ConfirmResult
from ..tracker import FeedbackTracker
from .conf import get_tracker

__all__ = ["REQUEST_ATTRIBUTE", "FeedbackMiddleware", "confirm_result"]

REQUEST_ATTRIBUTE = "twilio_feedback"
"""Name of the request attribute that holds the :class:`~twilio_feedback.ConfirmResult`."""

logger = logging.getLogger("twilio_feedback")

GetResponse = Callable[[HttpRequest], HttpResponseBase]
AsyncGetResponse = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


def confirm_result(request: HttpRequest) -> ConfirmResult | None:
    """The :class:`~twilio_feedback.ConfirmResult` of this request: what the middleware
    did on a confirm path, ``None`` on any other path (or without the middleware)."""
    result: ConfirmResult | None = getattr(request, REQUEST_ATTRIBUTE, None)
    return result


class FeedbackMiddleware:
    """Confirms links on the confirm paths of :func:`~twilio_feedback.django.get_tracker`'s
    settings; every other request costs one set lookup.

    The tracker is built when Django loads its middleware (at server start for WSGI and
    ASGI), so a configuration mistake stops the server with the reason, and the reporter
    runs from the start. Under WSGI the confirmation is one store operation in the
    request's thread; under ASGI it is awaited (see
    :meth:`~twilio_feedback.django.store.DjangoStore.as_async`). Twilio is told by the
    background reporter: the response never waits for it.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse | AsyncGetResponse) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        self._tracker: FeedbackTracker | None = None
        self._gate = self._current_gate()

    def _current_gate(self) -> ConfirmGate:
        tracker = get_tracker()
        if tracker is not self._tracker:
            # A test changed the settings: the tracker was rebuilt.
            self._gate = ConfirmGate(tracker)
            self._tracker = tracker
        return self._gate

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        get_response: GetResponse = self.get_response  # type: ignore[assignment]
        gate = self._current_gate()
        if request.path_info not in gate.paths:
            setattr(request, REQUEST_ATTRIBUTE, None)
            return get_response(request)
        method, query, headers = _read(request)
        body = _body(request, gate.form_length(method, query, headers))
        decision = gate.decide(method, query, headers, body)
        return _answer(gate, request, query, decision) or get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """The async path (ASGI, ``AsyncClient``): the store is awaited."""
        get_response: AsyncGetResponse = self.get_response  # type: ignore[assignment]
        gate = self._current_gate()
        if request.path_info not in gate.paths:
            setattr(request, REQUEST_ATTRIBUTE, None)
            return await get_response(request)
        method, query, headers = _read(request)
        # Django's ASGI handler has read the whole body before the request exists.
        body = _body(request, gate.form_length(method, query, headers))
        decision = await gate.decide_async(method, query, headers, body)
        return _answer(gate, request, query, decision) or await get_response(request)


def _read(request: HttpRequest) -> tuple[str, str, Headers]:
    meta = request.META
    headers = {
        "user-agent": meta.get("HTTP_USER_AGENT", ""),
        "content-type": meta.get("CONTENT_TYPE", ""),
        "content-length": meta.get("CONTENT_LENGTH", ""),
    }
    return request.method or "GET", meta.get("QUERY_STRING", ""), headers


def _body(request: HttpRequest, length: int) -> bytes | None:
    """The form body the gate asked for (``length`` bytes at most, as declared), or
    ``None``. Read through ``request.body``, so the view can still read ``request.POST``."""
    if not length:
        return None
    try:
        body = request.body
    except Exception:  # the client left, or the body is larger than Django allows
        logger.debug(
            "confirm: the form could not be read",
            exc_info=True,
            extra={"event": "confirm_form_unreadable"},
        )
        return None
    return body[:length]


def _answer(
    gate: ConfirmGate, request: HttpRequest, query: str, decision: Decision
) -> HttpResponse | None:
    """Attach the result; the redirect to answer with, or ``None`` to run the view."""
    setattr(request, REQUEST_ATTRIBUTE, decision.result)
    if decision.redirect is not None:
        response = HttpResponse(status=decision.status)
        for name, value in decision.headers:
            response[name] = value
        return response
    if decision.query != query:
        _set_query(gate, request, decision.query)
    return None


def _set_query(gate: ConfirmGate, request: HttpRequest, query: str) -> None:
    """Show the view the query without the token (``hide_token``): ``request.GET``,
    ``get_full_path()`` and the raw URIs some servers pass on."""
    meta = request.META
    meta["QUERY_STRING"] = query
    for key in ("REQUEST_URI", "RAW_URI"):  # set by gunicorn, uWSGI
        if key in meta:
            meta[key] = gate.strip_token_from_uri(meta[key])
    # request.GET is computed from QUERY_STRING on first use: forget a parse made earlier.
    request.__dict__.pop("GET", None)
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):
        request.scope = {**scope, "query_string": query.encode()}  # type: ignore[attr-defined]
