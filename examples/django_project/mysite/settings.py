"""Settings of the example project: Django's own, then twilio-feedback's (the app, the
middleware, one dict). The tests point it at a throwaway database and at the emulator
through the environment variables read here."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

# --8<-- [start:apps]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "twilio_feedback.django",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "twilio_feedback.django.FeedbackMiddleware",
]
# --8<-- [end:apps]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if os.environ.get("POSTGRES_DB"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["POSTGRES_DB"],
            "USER": os.environ.get("POSTGRES_USER", ""),
            "HOST": os.environ.get("POSTGRES_HOST", ""),
            "PORT": os.environ.get("POSTGRES_PORT", ""),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DJANGO_SQLITE_PATH", BASE_DIR / "db.sqlite3"),
        }
    }

USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --8<-- [start:settings]
TWILIO_FEEDBACK = {
    "STORE": "django://",  # this project's database: python manage.py migrate
    "CONFIRM_PATHS": ["/confirm"],
}
# The Twilio credentials: TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN, in the environment
# (or here). The links are signed with a key derived from SECRET_KEY.
TWILIO_PHONE_NUMBER = os.environ.get("TWILIO_PHONE_NUMBER")
# --8<-- [end:settings]

# --8<-- [start:emulator]
# Local development without a Twilio account: point the project at the emulator.
if os.environ.get("TWILIO_FEEDBACK_API_BASE_URL"):
    TWILIO_FEEDBACK["API_BASE_URL"] = os.environ["TWILIO_FEEDBACK_API_BASE_URL"]
# --8<-- [end:emulator]
