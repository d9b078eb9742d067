"""ASGI entry point: ``uvicorn mysite.asgi:application``."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

from django.core.asgi import get_asgi_application

from twilio_feedback.asgi import FeedbackMiddleware

from .feedback import tracker

application = FeedbackMiddleware(get_asgi_application(), tracker)
