"""``POST /send`` texts a tracked sign-in link; ``/confirm`` shows what the middleware did."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from twilio_feedback import ConfirmResult

from .feedback import tracker


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("twilio-feedback Django example: POST /send {'to': '+1...'}")


@csrf_exempt
@require_http_methods(["POST"])
def send(request: HttpRequest) -> JsonResponse:
    message = tracker.send(
        to=json.loads(request.body)["to"],
        from_=settings.TWILIO_PHONE_NUMBER,
        body="Your sign-in link: {link}",
        link=request.build_absolute_uri(reverse("confirm")),
    )
    return JsonResponse({"message_sid": message.sid})


@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def confirm(request: HttpRequest) -> JsonResponse:
    if "twilio_feedback.result" in request.META:  # WSGI: META is the environ
        result: ConfirmResult = request.META["twilio_feedback.result"]
    else:  # ASGI
        result = request.scope["twilio_feedback"]
    return JsonResponse({"status": result.status, "message_sid": result.message_sid})
