"""The library's exceptions, in one hierarchy callers can catch at the level they need."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "FeedbackError",
    "MissingDependencyError",
    "StorageError",
    "TwilioFeedbackError",
]


class TwilioFeedbackError(Exception):
    """Base class of every error this library raises."""


class ConfigurationError(TwilioFeedbackError, ValueError):
    """Settings that cannot work; the message says what to change."""


class MissingDependencyError(TwilioFeedbackError, ImportError):
    """An optional package is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the {package!r} package: pip install 'twilio-feedback[{extra}]'"
        )
        self.package = package
        self.extra = extra


class StorageError(TwilioFeedbackError):
    """A store operation failed: the server is down, a query timed out, or a bug in a
    custom store. ``backend`` names the store (its class), ``operation`` the method
    (``confirm``, ``claim``, ...); the original exception is the ``__cause__``. The message
    says both and the original exception's type, never a password."""

    def __init__(self, message: str, *, backend: str, operation: str) -> None:
        super().__init__(message)
        self.backend = backend
        self.operation = operation


class FeedbackError(TwilioFeedbackError):
    """Twilio did not accept a request (message create or feedback post).

    ``retryable`` says whether trying again later can succeed (network errors, 5xx, 408,
    429, and rejected credentials); ``retry_after`` is Twilio's Retry-After in seconds when
    it sent one. ``code`` and ``status`` are Twilio's error code and HTTP status when there
    was a response. ``credentials`` is ``True`` when Twilio refused the credentials (401,
    403): the operator's to fix, so the report is kept and retried, not failed.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | None = None,
        credentials: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.credentials = credentials

    def __repr__(self) -> str:
        return (
            f"FeedbackError({self.message!r}, retryable={self.retryable}, "
            f"status={self.status}, code={self.code})"
        )
