"""When to try a failed feedback post again: the reporter's retry policy, as pure functions.

Given the attempt, Twilio's error and the clock, :meth:`RetryPolicy.decide` answers
:class:`Retry` (after how long, and whether a recovery may pull it forward) or
:class:`Fail`. No threads, no store, no I/O: the reporter's runtime does what it says.

- Network errors, timeouts, 5xx, 408, 425 and 429 are retried with exponential backoff and
  equal jitter, never sooner than :data:`BACKOFF_FLOOR`: a ``Retry-After`` of 0, negative
  or NaN cannot make a tight loop.
- ``Retry-After`` means "not sooner than": the wait is the longer of it and the backoff.
- Rejected credentials (401, 403) are the operator's to fix: retried at the backoff cap.
- Other 4xx fail at once, with Twilio's code.
- Nothing is retried past ``retry_window`` from the confirmation; a wait that would end
  later is cut so that the last attempt happens at the window's end.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .errors import FeedbackError

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "BACKOFF_FLOOR",
    "Fail",
    "Retry",
    "RetryPolicy",
    "backoff",
]

BACKOFF_BASE = 0.5
"""The first backoff's ceiling, in seconds; it doubles with each attempt."""
BACKOFF_FLOOR = 0.5
"""No retry comes sooner than this many seconds, whatever Retry-After says (0, negative)."""
BACKOFF_CAP = 60.0
"""The longest backoff, in seconds; rejected credentials are retried at this pace."""
_AT_CAP = 64  # an attempt number whose backoff is at the cap


def backoff(
    attempt: int,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
    floor: float = BACKOFF_FLOOR,
    *,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with equal jitter: uniform in ``[c / 2, c]`` where
    ``c = min(cap, base * 2**attempt)``, and never under ``floor``."""
    ceiling = min(cap, base * 2 ** min(attempt, _AT_CAP))
    return max(floor, (rng or random).uniform(ceiling / 2, ceiling))


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after ``delay`` seconds.

    ``pull`` says whether a recovery (a post that succeeds meanwhile) makes it due at
    once: ``True`` for backoff after an outage, an account SID for credentials refused
    on that account (a success there proves them fixed), ``False`` when Twilio said when
    (Retry-After).
    """

    delay: float
    pull: bool | str


@dataclass(frozen=True, slots=True)
class Fail:
    """Give up: Twilio refused for good, or the retry window is over."""

    reason: str


class RetryPolicy:
    """The retry policy for one tracker's settings (``retry_window``, in seconds)."""

    def __init__(self, retry_window: float, *, rng: random.Random | None = None) -> None:
        self.retry_window = retry_window
        self._rng = rng

    def window_end(self, confirmed_at: float | None, created_at: float, now: float) -> float:
        """When retrying stops for a record confirmed at ``confirmed_at``."""
        return (confirmed_at or created_at or now) + self.retry_window

    def decide(
        self, error: FeedbackError, *, attempts: int, account: str, now: float, window_end: float
    ) -> Retry | Fail:
        """What to do after attempt number ``attempts`` (1 for the first) failed with
        ``error`` at ``now`` (epoch seconds), for a report to ``account``."""
        if not error.retryable:
            return Fail("refused")
        if now + BACKOFF_FLOOR > window_end:
            return Fail("retry window over")
        delay = backoff(_AT_CAP if error.credentials else attempts, rng=self._rng)
        retry_after = error.retry_after
        if retry_after is not None and retry_after == retry_after:  # NaN is no answer
            delay = max(delay, retry_after)
        delay = min(delay, window_end - now)  # the last attempt at the window's end
        pull: bool | str = account if error.credentials else retry_after is None
        return Retry(delay, pull)
