"""Presence: who is on a channel, shared across server processes with Redis (docs/presence.md).

``build_presence()`` makes the backend ``PULSE["PRESENCE_BACKEND"]`` names (a dotted path; by default Redis
when ``REDIS_URL`` is configured, else memory). This process's one instance is owned by the runtime
(``django_pulse.server.runtime.Runtime.presence``), which rebuilds it when the settings change.
"""

from __future__ import annotations

from django.utils.module_loading import import_string

from .._conf import pulse_settings
from ..broker.base import Broker
from . import base
from .base import *  # noqa: F403  (re-exported: every name of base's __all__)
from .base import PresenceBackend

__all__ = [*base.__all__, "build_presence"]


def build_presence(broker: Broker) -> PresenceBackend:
    """A new backend of the class ``pulse_settings.PRESENCE_BACKEND`` names, publishing through ``broker``."""
    path = pulse_settings.PRESENCE_BACKEND
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImportError(f"PULSE['PRESENCE_BACKEND'] {path!r} cannot be imported: {exc}") from exc
    backend: PresenceBackend = cls()
    backend.broker = broker
    return backend
