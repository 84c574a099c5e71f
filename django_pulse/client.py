"""Deprecated alias of ``django_pulse.clients.websocket``, the asyncio client (moved in 0.2; this alias goes in 0.3)."""

from __future__ import annotations

import warnings

from .clients.websocket import *  # noqa: F403
from .clients.websocket import __all__  # noqa: F401

warnings.warn(
    "django_pulse.client moved to django_pulse.clients.websocket (import it from django_pulse.clients); "
    "the old path is removed in 0.3.",
    DeprecationWarning,
    stacklevel=2,
)
