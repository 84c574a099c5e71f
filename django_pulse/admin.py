"""Django admin for Pulse apps and their API keys (keys are read-only: create them with ``pulse keys``)."""

from __future__ import annotations

from django.contrib import admin

from .models import ApiKey, PulseApp


class ApiKeyInline(admin.TabularInline):  # type: ignore[type-arg]
    model = ApiKey
    extra = 0
    can_delete = False
    fields = ("prefix", "name", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")


@admin.register(PulseApp)
class PulseAppAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("kb_id", "name", "enabled", "created_at")
    list_filter = ("enabled",)
    search_fields = ("kb_id", "name")
    inlines = [ApiKeyInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("prefix", "app", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("app",)
    readonly_fields = ("prefix", "app", "created_at", "last_used_at")

    def has_add_permission(self, request: object) -> bool:
        return False
