"""A health endpoint for a monitor: 200 while delivery keeps up, 503 once it falls behind."""

from __future__ import annotations

import json
from typing import Any

from twilio_feedback import FeedbackTracker

tracker = FeedbackTracker()


async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET /health: the tracker's health as JSON."""
    report = await tracker.health_async(max_age=300)
    await send(
        {
            "type": "http.response.start",
            "status": 200 if report.ok else 503,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(report.to_dict()).encode()})
