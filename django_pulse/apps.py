from __future__ import annotations

from django.apps import AppConfig


class PulseConfig(AppConfig):
    name = "django_pulse"
    verbose_name = "Pulse"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
