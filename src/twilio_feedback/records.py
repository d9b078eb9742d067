"""Records kept per tracked message, their states, and the result of a confirmation."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["RECORD_FIELDS", "ConfirmResult", "ConfirmStatus", "Record", "State"]


class State(str, enum.Enum):
    """Where a tracked message stands.

    ``pending`` -> ``confirmed`` (the user acted; the outbox) -> ``reported`` (Twilio
    accepted the feedback) or ``failed`` (Twilio refused it for good, or the retry window
    ended).
    """

    PENDING = "pending"
    CONFIRMED = "confirmed"
    REPORTED = "reported"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Record:
    """One tracked message, as a store keeps it.

    Times are Unix timestamps (seconds, float). ``message_sid`` is ``None`` between the
    moment :meth:`FeedbackTracker.send` writes the record and the moment Twilio returns
    the SID; a confirmation in that window is kept and reported once the SID is known.
    ``lease_until`` is set while one reporter owns the record, so that processes sharing a
    store do not all post the same feedback. ``account_sid`` is ``None`` for the settings'
    own account (stores keep nothing for it).

    ``country`` (ISO 3166 alpha-2, ``XX`` when unknown) and ``sender`` (the ``from_``
    number or messaging service SID) place the message in the conversion insights
    (:mod:`twilio_feedback.insights`); both ``None`` for a record the insights do not
    count (``Settings.insights`` off).
    """

    tracking_id: str
    expires_at: float
    state: State = State.PENDING
    message_sid: str | None = None
    account_sid: str | None = None
    created_at: float = 0.0
    confirmed_at: float | None = None
    lease_until: float = 0.0
    attempts: int = 0
    error_code: int | None = None
    error_message: str | None = None
    country: str | None = None
    sender: str | None = None

    def replace(self, **changes: Any) -> Record:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (``state`` as its string value), for serialising stores."""
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["state"] = State(values.get("state", State.PENDING))
        return cls(**values)


RECORD_FIELDS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Record))
"""The names of a :class:`Record`'s fields, ``tracking_id`` first: the columns of the
SQL and Django stores' record tables."""

ConfirmStatus = Literal[
    "confirmed", "duplicate", "deferred", "ignored", "invalid", "expired", "unknown", "error"
]
"""Every outcome of a confirmation attempt.

- ``confirmed``: this request performed the confirmation; feedback will be reported.
- ``duplicate``: the message was confirmed before; nothing more is reported.
- ``deferred``: a genuine, unexpired token (or a key) while the store could not be
  reached: the confirmation is kept in this process's memory and applied, with the same
  atomic confirm, once the store answers; then it is reported like any other (or found to
  be a duplicate). ``ok`` is true, since the link is genuine and the person acted;
  ``confirmed`` is false, since nothing is in the store yet. A process that dies before
  the store is back loses it.
- ``ignored``: not a real visit (HEAD/OPTIONS, a link-preview bot, not a confirm path).
- ``invalid``: no token, or a forged, tampered or malformed one.
- ``expired``: a genuine token (or record) past its maximum age.
- ``unknown``: a genuine token or key with no record in the store.
- ``error``: the store could not be reached and the confirmation could not be kept
  (the buffer of deferred confirmations is full, or the tracker is closed); nothing was
  confirmed, and the link works again once the store is back.
"""


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    """What happened to one confirmation attempt.

    The middleware hands this to the wrapped app; :meth:`FeedbackTracker.confirm` and
    :meth:`FeedbackTracker.confirm_token` return it. It never carries the token itself.
    """

    status: ConfirmStatus
    tracking_id: str | None = None
    message_sid: str | None = None
    reason: str | None = None
    country: str | None = dataclasses.field(default=None, compare=False)
    """The destination's country of the message (ISO 3166 alpha-2), where the store
    returned its record (``confirmed``, ``duplicate``, ``expired``): the ``country``
    attribute of the confirmation metric. Not part of equality: two results say the
    same when their status, ids and reason do."""

    @property
    def confirmed(self) -> bool:
        """``True`` only for the one request that performed the confirmation."""
        return self.status == "confirmed"

    @property
    def ok(self) -> bool:
        """``True`` when the message is confirmed, by this request or an earlier one, or
        will be once the store answers again (``deferred``)."""
        return self.status in ("confirmed", "duplicate", "deferred")
