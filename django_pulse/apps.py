from __future__ import annotations

from django.apps import AppConfig


class PulseConfig(AppConfig):
    name = "django_pulse"
    verbose_name = "Pulse"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import checks  # noqa: F401  (registers the system checks)

        # Like admin.py: every installed app's pulse.py (authorize hooks, publishers.register(...)) is imported
        # once the app registry is ready, so no app has to import it from its own ready().
        autodiscover_modules("pulse")
