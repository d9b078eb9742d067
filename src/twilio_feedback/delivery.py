"""Where a confirmation goes once it has won: the seam between confirming and reporting.

Every place that may hold a freshly confirmed record with a message SID (the confirm step,
a deferred confirmation applied, a ``send()`` that learns the SID after a click, a SID
lookup) hands it to the tracker's :class:`Delivery`, picked by ``Settings.reporter``:

- ``thread``: :class:`ThreadDelivery`, this process's :class:`~twilio_feedback.reporter.Reporter`
  queue (background threads post it);
- ``off``: :class:`OutboxDelivery`, nothing: the record waits, ``confirmed`` with no lease, in
  the store's outbox for a ``twilio-feedback worker``, a scheduled ``drain`` or
  :meth:`~twilio_feedback.tracker.FeedbackTracker.drain`;
- ``celery``: :class:`twilio_feedback.celery.CeleryDelivery`, one Celery task per record.

Whatever the mode, the store's outbox is the truth: a record a delivery could not take
stays ``confirmed`` there, and any sweep takes it once its lease ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .records import Record
    from .reporter import Reporter
    from .settings import Settings

__all__ = ["Delivery", "OutboxDelivery", "ThreadDelivery", "delivery_for"]


class Delivery(Protocol):
    """What a won confirmation is handed to."""

    blocking: bool
    """Whether :meth:`submit` may wait on I/O: async callers then run it in a worker
    thread, so the event loop never waits."""

    def submit(self, record: Record) -> bool:
        """Hand over a confirmed record that has a message SID. ``False`` when it could not
        be taken: it stays ``confirmed`` in the store for a sweep."""


class ThreadDelivery:
    """``reporter="thread"``: this process's reporter posts it, in the background."""

    blocking = False

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def submit(self, record: Record) -> bool:
        """Queue it for the reporter (never blocks)."""
        return self.reporter.submit(record)


class OutboxDelivery:
    """``reporter="off"``: nothing happens here. The confirmation took no lease, so the next
    sweep of a worker or a drain takes it."""

    blocking = False

    def submit(self, record: Record) -> bool:
        """Leave it in the store's outbox."""
        return True


def delivery_for(settings: Settings, reporter: Reporter) -> Delivery:
    """The delivery ``settings.reporter`` names."""
    if settings.reporter == "off":
        return OutboxDelivery()
    if settings.reporter == "celery":
        from .celery import CeleryDelivery

        return CeleryDelivery(settings)
    return ThreadDelivery(reporter)
