"""WSGI entry point: ``gunicorn mysite.wsgi:application``."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from django.core.wsgi import get_wsgi_application

from twilio_feedback.wsgi import FeedbackMiddleware

from .feedback import tracker

application = FeedbackMiddleware(get_wsgi_application(), tracker)
