"""The Celery app of a project whose reports are delivered by Celery workers.

Import this module wherever the Celery app is needed: in the web processes (their
trackers, with ``TWILIO_FEEDBACK_REPORTER=celery``, enqueue one report task per
confirmation on this app) and in the workers::

    celery -A celery_tasks worker --beat      # or run beat as a process of its own
"""

from __future__ import annotations

import os

from celery import Celery

from twilio_feedback.celery import setup

app = Celery("proj", broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/1"))
app.conf.broker_connection_retry_on_startup = True

# The report and drain tasks; the workers read TWILIO_* settings from their environment.
feedback = setup(app)

# The periodic drain: what a task lost on the way (a worker killed mid-task, a broker that
# lost its queue) left confirmed in the store is delivered here.
every = float(os.environ.get("DRAIN_EVERY", "60"))
app.conf.beat_schedule = {"twilio-feedback-drain": feedback.drain_entry(every=every)}
