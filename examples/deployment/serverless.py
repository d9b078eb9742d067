"""Serverless: web functions only write the store; a scheduled function delivers.

Both functions run this module with the same environment: Twilio's credentials,
``TWILIO_FEEDBACK_SECRET_KEY``, a shared ``TWILIO_FEEDBACK_STORE`` (PostgreSQL, Redis)
and ``TWILIO_FEEDBACK_REPORTER=off``, so no thread is started that a frozen function
could not run.
"""

from __future__ import annotations

from typing import Any

from twilio_feedback import FeedbackTracker
from twilio_feedback.asgi import FeedbackMiddleware

# At module level: built once per container, reused while it stays warm.
tracker = FeedbackTracker()


async def site(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Your app: here, a page that says what the link did."""
    if scope["type"] != "http":
        return
    result = scope.get("twilio_feedback")
    body = f"link: {result.status}" if result else "hello"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


app = FeedbackMiddleware(site, tracker)
# AWS Lambda: handler = mangum.Mangum(app). Cloud Run, Azure Functions: serve `app` (ASGI).

SAFETY = 15.0
"""Seconds kept free at the end of the scheduled run: a post in flight, and the return."""


def drain_handler(event: Any = None, context: Any = None) -> dict[str, int]:
    """The scheduled function (every minute: EventBridge, Cloud Scheduler, a timer
    trigger): deliver what is due, within the time the platform gives this run."""
    seconds = 60.0
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        seconds = context.get_remaining_time_in_millis() / 1000
    done = tracker.drain(timeout=max(1.0, seconds - SAFETY))
    return {
        "taken": done.taken,
        "reported": done.reported,
        "failed": done.failed,
        "left": done.left,
    }
