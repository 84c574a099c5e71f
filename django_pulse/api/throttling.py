"""Throttling per API key, at ``PULSE["API_THROTTLE_RATE"]`` (DRF syntax, e.g. ``"6000/min"``; None: off).

The rate is read on every request, so changing the setting takes effect at once. Counts live in Django's
default cache (per process with the local-memory cache; shared with Redis/Memcached). The admin credential
of ``manage.py pulse`` is not throttled; a logged-in user asking for a token is throttled per user.
"""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from .._conf import pulse_settings
from .authentication import PulseCaller

__all__ = ["ApiKeyThrottle"]


class ApiKeyThrottle(SimpleRateThrottle):
    scope = "pulse"

    def get_rate(self) -> str | None:
        return pulse_settings.API_THROTTLE_RATE

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        caller = request.auth
        if isinstance(caller, PulseCaller):
            return None if caller.api_key is None else f"pulse:throttle:key:{caller.api_key.prefix}"
        if request.user and request.user.is_authenticated:
            return f"pulse:throttle:user:{request.user.pk}"
        return None
