"""Django integration: an app, a middleware entry, one settings dict, a management command,
and the ``django://`` store in the project's own database.

.. code-block:: python

    INSTALLED_APPS = [..., "twilio_feedback.django"]
    MIDDLEWARE = [..., "twilio_feedback.django.FeedbackMiddleware"]
    TWILIO_FEEDBACK = {"STORE": "django://", "CONFIRM_PATHS": ["/confirm"]}

Views read ``request.twilio_feedback`` (or :func:`confirm_result`) and send with
:func:`get_tracker`; ``python manage.py twilio_feedback status|drain|report|...``
runs the command line's commands on the project's settings. See the Django quickstart.
"""

from __future__ import annotations

from ..stores.base import register_store

register_store("django", "twilio_feedback.django.store:DjangoStore.from_url")

from .conf import get_settings, get_tracker  # noqa: E402
from .middleware import FeedbackMiddleware, confirm_result  # noqa: E402

__all__ = ["FeedbackMiddleware", "confirm_result", "get_settings", "get_tracker"]
