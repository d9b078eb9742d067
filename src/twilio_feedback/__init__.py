"""twilio-feedback: close Twilio's Message Feedback loop for any ASGI or WSGI app.

Send OTP and verification messages with ``ProvideFeedback=True`` and a signed tracking
link; when the recipient opens the link (or types the code back), Twilio hears
``Outcome=confirmed`` in the background, so its routing learns from real user actions.
"""

from __future__ import annotations

from .errors import ConfigurationError, FeedbackError, MissingDependencyError, TwilioFeedbackError
from .records import ConfirmResult, ConfirmStatus, Record, State
from .settings import Settings
from .tracker import FeedbackTracker, Ticket

__all__ = [
    "ConfigurationError",
    "ConfirmResult",
    "ConfirmStatus",
    "FeedbackError",
    "FeedbackTracker",
    "MissingDependencyError",
    "Record",
    "Settings",
    "State",
    "Ticket",
    "TwilioFeedbackError",
    "__version__",
]

__version__ = "0.1.0"
