"""The HTTP API's endpoints (without the schema, which describes exactly these): included by ``django_pulse.urls``."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import views

__all__ = ["urlpatterns"]

urlpatterns: list[URLPattern] = [
    path("token/", views.TokenView.as_view(), name="token"),
    path("publish/", views.PublishView.as_view(), name="publish"),
    path("presence/<str:channel>/", views.PresenceView.as_view(), name="presence"),
    path("channels/", views.ChannelsView.as_view(), name="channels"),
    path("status/", views.StatusView.as_view(), name="status"),
    path("close-connections/", views.CloseConnectionsView.as_view(), name="close-connections"),
]
