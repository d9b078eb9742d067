"""``POST /send`` texts a tracked sign-in link; ``/confirm`` shows what the middleware did."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from twilio_feedback.django import get_tracker


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("twilio-feedback Django example: POST /send {'to': '+1...'}")


# --8<-- [start:views]
@csrf_exempt
@require_POST
def send(request: HttpRequest) -> JsonResponse:
    message = get_tracker().send(
        to=json.loads(request.body)["to"],
        from_=settings.TWILIO_PHONE_NUMBER,
        body="Your sign-in link: {link}",
        link=request.build_absolute_uri(reverse("confirm")),
    )
    return JsonResponse({"message_sid": message.sid})


@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def confirm(request: HttpRequest) -> JsonResponse:
    result = request.twilio_feedback  # the middleware's ConfirmResult
    return JsonResponse({"status": result.status, "message_sid": result.message_sid})


# --8<-- [end:views]
