"""twilio-feedback's log records as JSON lines, with their structured fields.

    pip install python-json-logger

Call ``log_as_json()`` once at startup. Each record becomes one JSON object: the message
as you would read it, and the fields a log pipeline indexes (``event``, ``tracking_id``,
``message_sid``, ``outcome``, ``attempt``, ``twilio_code``, ...).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter


def log_as_json(stream: TextIO = sys.stderr, level: int = logging.INFO) -> logging.Handler:
    """Send the library's records at ``level`` and above to ``stream``, one JSON object a
    line; return the handler (to remove it again)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter("{asctime}{levelname}{name}{message}", style="{", timestamp=False)
    )
    logger = logging.getLogger("twilio_feedback")
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler
