"""URLs of the example project."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.home),
    path("send", views.send),
    path("confirm", views.confirm, name="confirm"),
]
