"""The HTTP API of django-pulse (Django REST framework): tokens, publishing, presence, channels.

Mount it with ``path("pulse/", include("django_pulse.urls"))``; docs/http-api.md describes it.
"""
