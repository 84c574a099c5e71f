"""Deprecated alias of ``django_pulse.clients.http``, the HTTP API client (moved in 0.2; this alias goes in 0.3)."""

from __future__ import annotations

import warnings

from .clients.http import *  # noqa: F403
from .clients.http import __all__  # noqa: F401

warnings.warn(
    "django_pulse.http_client moved to django_pulse.clients.http (import it from django_pulse.clients); "
    "the old path is removed in 0.3.",
    DeprecationWarning,
    stacklevel=2,
)
