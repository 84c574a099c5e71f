"""Django admin for Pulse apps and their API keys.

Keys are never typed into a form: a key is created only by the action "Create an API key" (or ``manage.py
pulse enable`` / ``keys --rotate``), which shows the new key once; the inline lists keys and lets them be
revoked or renamed, but cannot add a row (an added row had an empty prefix and hash). Unticking "Enabled"
closes the app's open connections on every server process (``django_pulse.models``' ``post_save``).

``LiveAdmin`` puts the live view (docs/admin.md) at ``/admin/django_pulse/live/``, listed on the admin index for
staff with the permission ``django_pulse.view_live``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from .models import ApiKey, Live, OutboxMessage, PulseApp
from .ops.staff_channel import may_watch
from .server.runtime import get_runtime

__all__ = ["ApiKeyAdmin", "LiveAdmin", "OutboxMessageAdmin", "PulseAppAdmin"]


class ApiKeyInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("prefix", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys come from the "Create an API key" action, which shows the key once


@admin.register(PulseApp)
class PulseAppAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Pulse apps, with their keys inline and the action "Create an API key" (the key is shown once)."""

    list_display = ("kb_id", "name", "enabled", "created_at")
    list_filter = ("enabled",)
    search_fields = ("kb_id", "name")
    inlines = [ApiKeyInline]
    actions = ["create_api_key"]

    @admin.action(description="Create an API key (shown once)", permissions=["change"])
    def create_api_key(self, request: HttpRequest, queryset: QuerySet[PulseApp]) -> None:
        for app in queryset:
            _, raw = app.create_key(f"admin: {request.user}")
            self.message_user(
                request,
                f"New API key for {app.kb_id}: {raw} — copy it now, it is stored hashed and will not be shown again.",
                messages.WARNING,
            )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """API keys: listed, renamed and revoked here; created only by the app's action or the command."""

    list_display = ("prefix", "app", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("app",)
    readonly_fields = ("prefix", "app", "created_at", "last_used_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Live)
class LiveAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The live view in place of a change list: no rows, no add/change/delete; its own URLs."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_watch(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        from .ops import live_view

        wrap = self.admin_site.admin_view  # staff only (else the login page), CSRF-protected, never cached
        return [
            path("", wrap(self.changelist_view), name="django_pulse_live_changelist"),
            path("snapshot/", wrap(live_view.snapshot_view), name="django_pulse_live_snapshot"),
            path("members/", wrap(live_view.members_view), name="django_pulse_live_members"),
            path("token/", wrap(live_view.token_view), name="django_pulse_live_token"),
            path("disconnect/", wrap(live_view.disconnect_view), name="django_pulse_live_disconnect"),
            path("app/", wrap(live_view.app_view), name="django_pulse_live_app"),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        from .ops import live_view

        return live_view.page_view(request, self)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Outbox rows (docs/durability.md): dead letters first to look at, with the action "Retry"; read-only."""

    list_display = ("id", "channel", "event", "kb_id", "created_at", "attempts", "dead", "last_error")
    list_filter = ("dead", "kb_id")
    search_fields = ("channel", "event", "message_id")
    actions = ["retry"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Retry (publish the dead letters again)", permissions=["delete"])
    def retry(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        count = OutboxMessage.objects.retry_dead(queryset.values_list("id", flat=True))
        get_runtime().wake_relay()
        self.message_user(request, f"{count} dead letters will be published again.", messages.SUCCESS)
