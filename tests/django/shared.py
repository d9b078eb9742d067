"""Opening the tests' ``django://`` store in another process (the conformance suite's
process races): Django configured there with the same databases."""

from __future__ import annotations

from typing import Any

from twilio_feedback.django.store import DjangoStore


def open_store(databases: dict[str, Any], alias: str) -> DjangoStore:
    """The store on ``alias`` of ``databases``, in a process that may not have set Django
    up yet (a spawned worker), or has, for another race (the databases of one test
    session are the same throughout)."""
    from django.conf import settings

    import django

    if not settings.configured:
        settings.configure(
            DATABASES={name: dict(entry) for name, entry in databases.items()},
            INSTALLED_APPS=["twilio_feedback.django"],
            USE_TZ=True,
        )
        django.setup()
    return DjangoStore(alias)
