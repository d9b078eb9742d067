"""Testing helpers: the FakeTwilio emulator and its pytest plugin.

``FakeTwilio`` is a real HTTP server on 127.0.0.1 that serves Twilio's Messages and
Feedback endpoints with fault injection. The pytest plugin (registered automatically when
this package is installed) provides the ``fake_twilio`` fixture.
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
    RecordedRequest,
    Status,
)

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
