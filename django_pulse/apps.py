"""The Django app of django-pulse: add ``"django_pulse"`` to ``INSTALLED_APPS``.

When Django is ready it registers the system checks, imports every installed app's ``pulse.py`` (authorize hooks,
``publishers.register(...)``), and connects the admin's live view.
"""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["PulseConfig"]


class PulseConfig(AppConfig):
    """The app config Django picks for ``"django_pulse"`` (its label, ``django_pulse``, names the tables and the
    permissions)."""

    name = "django_pulse"
    verbose_name = "Pulse"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from . import _checks  # noqa: F401  (registers the system checks)

        # Like admin.py: every installed app's pulse.py (authorize hooks, publishers.register(...)) is imported
        # once the app registry is ready, so no app has to import it from its own ready().
        autodiscover_modules("pulse")

        # The admin's live view: a subscribe admitted to the staff channel starts this process's watcher.
        from .ops.live_view import start_watching
        from .ops.staff_channel import watch_requested

        watch_requested.connect(start_watching, dispatch_uid="django_pulse.ops.live_view.start_watching")

        from ._conf import pulse_settings

        if pulse_settings.BROKER_BACKEND == "django_pulse.broker.memory.MemoryBroker":
            from .broker.memory import warn_if_several_workers

            warn_if_several_workers()  # `uvicorn --workers 2` without Redis splits the site in two
