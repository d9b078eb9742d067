"""Testing helpers: the FakeTwilio emulator, its faults, and a pytest plugin.

:class:`FakeTwilio` is a real HTTP server on 127.0.0.1 serving Twilio's Messages (create
and list) and Message Feedback endpoints, so tests exercise the official client over real
HTTP with no network and no Twilio account. :class:`Status`, :class:`Drop`, :class:`Hang`,
:class:`Delay`, :class:`Trickle` and :class:`RawAnswer` are the faults it injects on
demand. The pytest plugin (registered when the package is installed) provides the
``fake_twilio`` and ``fake_twilio_session`` fixtures. The Store conformance suite lives
in :mod:`twilio_feedback.testing.conformance`.
"""

from __future__ import annotations

from .fake_twilio import (
    Delay,
    Drop,
    FakeTwilio,
    Fault,
    FeedbackPost,
    Hang,
    Message,
    RawAnswer,
    RecordedRequest,
    Status,
    Trickle,
    WaitTimeout,
)

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
