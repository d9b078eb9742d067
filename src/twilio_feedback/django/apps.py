"""The app's configuration: names checked at start-up, system checks registered."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

__all__ = ["TwilioFeedbackConfig"]


class TwilioFeedbackConfig(AppConfig):
    """``twilio_feedback.django`` in ``INSTALLED_APPS``. Its label (migrations, admin,
    permissions) is ``twilio_feedback``."""

    name = "twilio_feedback.django"
    label = "twilio_feedback"
    verbose_name = "Twilio feedback"
    default = True

    def ready(self) -> None:
        """Refuse misspelt settings now (``ImproperlyConfigured``), and register the
        system checks (:mod:`twilio_feedback.django.checks`)."""
        from . import checks as ours
        from .conf import validate_names

        validate_names()
        checks.register(ours.check_settings, "twilio_feedback")
        checks.register(ours.check_memory_store, "twilio_feedback")
        checks.register(ours.check_memory_store_deploy, "twilio_feedback", deploy=True)
