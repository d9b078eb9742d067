"""URLs of the example project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from . import views

# --8<-- [start:urls]
urlpatterns = [
    path("admin/", admin.site.urls),
    path("", views.home),
    path("send", views.send),
    path("confirm", views.confirm, name="confirm"),
]
# --8<-- [end:urls]
