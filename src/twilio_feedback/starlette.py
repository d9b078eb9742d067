"""Starlette and FastAPI: the middleware, and typed access to its result and tracker.

.. code-block:: python

    from twilio_feedback.starlette import FeedbackMiddleware, confirm_result, get_tracker

    app = FastAPI()
    app.add_middleware(FeedbackMiddleware)   # Settings.from_env() when the app starts

    @app.get("/confirm")
    async def confirm(
        result: Annotated[ConfirmResult | None, Depends(confirm_result)],
    ) -> dict[str, str | None]: ...

:class:`FeedbackMiddleware` is :class:`twilio_feedback.asgi.FeedbackMiddleware`: it builds
its tracker at lifespan startup and closes it at shutdown. :func:`confirm_result` and
:func:`get_tracker` take the request (any ``HTTPConnection``, websockets included), so they
are FastAPI dependencies as they are, and plain calls in Starlette.
"""

from __future__ import annotations

from .asgi import FeedbackMiddleware
from .asgi import confirm_result as _scope_result
from .asgi import get_tracker as _scope_tracker
from .errors import MissingDependencyError
from .records import ConfirmResult
from .tracker import FeedbackTracker

try:
    from starlette.requests import HTTPConnection
except ImportError:  # pragma: no cover (the starlette extra installs it)
    raise MissingDependencyError("starlette", "starlette", "twilio_feedback.starlette") from None

__all__ = ["FeedbackMiddleware", "confirm_result", "get_tracker"]


def confirm_result(request: HTTPConnection) -> ConfirmResult | None:
    """The :class:`~twilio_feedback.ConfirmResult` the middleware left for this request;
    ``None`` on a path that does not confirm. A FastAPI dependency:
    ``Annotated[ConfirmResult | None, Depends(confirm_result)]``."""
    return _scope_result(request.scope)


def get_tracker(request: HTTPConnection) -> FeedbackTracker:
    """The middleware's :class:`~twilio_feedback.FeedbackTracker`, for ``send_async`` in a
    route. A FastAPI dependency: ``Annotated[FeedbackTracker, Depends(get_tracker)]``.
    Raises ``RuntimeError`` when no :class:`FeedbackMiddleware` wraps the app."""
    return _scope_tracker(request.scope)
