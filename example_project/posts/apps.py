from __future__ import annotations

from django.apps import AppConfig


class PostsConfig(AppConfig):
    name = "posts"
    verbose_name = "Live Posts"
    default_auto_field = "django.db.models.BigAutoField"
    # posts/pulse.py (the private channels' authorize hook) is imported by django_pulse's autodiscovery.
