"""The process's one tracker, configured from Django's settings."""

from __future__ import annotations

from django.conf import settings

from twilio_feedback import FeedbackTracker, Settings

tracker = FeedbackTracker(Settings.from_mapping(settings))
