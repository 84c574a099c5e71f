"""URLs of the HTTP API; mount them with ``path("pulse/", include("django_pulse.urls"))`` (docs/http-api.md)."""

from __future__ import annotations

from django.urls import URLPattern, path

from .api import views
from .api.urls import urlpatterns as api_urlpatterns

__all__ = ["api_urlpatterns", "app_name", "urlpatterns"]

app_name = "django_pulse"

urlpatterns: list[URLPattern] = [
    *api_urlpatterns,
    path("schema/", views.SchemaView.as_view(), name="schema"),
]
