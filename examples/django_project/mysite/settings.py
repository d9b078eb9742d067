"""Settings of the example project; the TWILIO_* names are read by twilio-feedback
through ``Settings.from_mapping(django.conf.settings)`` (see feedback.py)."""

from __future__ import annotations

import os

DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

TWILIO_ACCOUNT_SID = os.environ.get("TWILIO_ACCOUNT_SID")
TWILIO_AUTH_TOKEN = os.environ.get("TWILIO_AUTH_TOKEN")
TWILIO_PHONE_NUMBER = os.environ.get("TWILIO_PHONE_NUMBER")
TWILIO_FEEDBACK_SECRET_KEY = os.environ.get("TWILIO_FEEDBACK_SECRET_KEY")
TWILIO_FEEDBACK_STORE = os.environ.get("TWILIO_FEEDBACK_STORE", "memory://")
TWILIO_FEEDBACK_CONFIRM_PATHS = ["/confirm"]
TWILIO_FEEDBACK_API_BASE_URL = os.environ.get(
    "TWILIO_FEEDBACK_API_BASE_URL", "https://api.twilio.com"
)
