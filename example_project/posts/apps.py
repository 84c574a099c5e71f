from __future__ import annotations

from django.apps import AppConfig


class PostsConfig(AppConfig):
    name = "posts"
    verbose_name = "Live Posts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import pulse  # noqa: F401  (registers the private channels' authorize hook)
