"""URLs of the HTTP API; mount them with ``path("pulse/", include("django_pulse.urls"))`` (docs/http-api.md)."""

from __future__ import annotations

from django.urls import URLPattern, path

from .api import views

__all__ = ["api_urlpatterns", "app_name", "urlpatterns"]

app_name = "django_pulse"

api_urlpatterns: list[URLPattern] = [
    path("token/", views.TokenView.as_view(), name="token"),
    path("publish/", views.PublishView.as_view(), name="publish"),
    path("presence/<str:channel>/", views.PresenceView.as_view(), name="presence"),
    path("channels/", views.ChannelsView.as_view(), name="channels"),
    path("status/", views.StatusView.as_view(), name="status"),
    path("close-connections/", views.CloseConnectionsView.as_view(), name="close-connections"),
]

urlpatterns: list[URLPattern] = [
    *api_urlpatterns,
    path("schema/", views.SchemaView.as_view(), name="schema"),
    path("metrics/", views.MetricsView.as_view(), name="metrics"),  # Prometheus text (docs/metrics.md)
]
