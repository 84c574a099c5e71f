"""URLs of the HTTP API; mount them with ``path("pulse/", include("django_pulse.urls"))`` (docs/http-api.md)."""

from __future__ import annotations

from django.urls import URLPattern, path

from .api import urls as _api_urls
from .api import views

#: The HTTP API's endpoints only (token, publish, presence, channels, ...), without the schema and metrics.
api_urlpatterns: list[URLPattern] = _api_urls.urlpatterns

__all__ = ["api_urlpatterns", "app_name", "urlpatterns"]

#: The URL namespace: ``reverse("django_pulse:publish")``.
app_name = "django_pulse"

#: Everything under the mount point: the HTTP API, its OpenAPI schema (``schema/``) and this process's
#: Prometheus metrics (``metrics/``).
urlpatterns: list[URLPattern] = [
    *api_urlpatterns,
    path("schema/", views.SchemaView.as_view(), name="schema"),
    path("metrics/", views.MetricsView.as_view(), name="metrics"),  # Prometheus text (docs/metrics.md)
]
