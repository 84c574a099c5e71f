"""Presence: who is on a channel, shared across server processes with Redis (docs/presence.md).

``get_presence()`` returns this process's backend, chosen by ``PULSE["PRESENCE_BACKEND"]`` (a dotted path;
by default Redis when ``REDIS_URL`` is configured, else memory) and rebuilt when the settings change.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..conf import pulse_settings
from .base import Member, NotPresent, PresenceBackend, PresenceChange, PresenceSnapshot, presence_topic

__all__ = [
    "Member",
    "NotPresent",
    "PresenceBackend",
    "PresenceChange",
    "PresenceSnapshot",
    "get_presence",
    "presence_topic",
    "reset_presence",
]

_backend: PresenceBackend | None = None
_lock = threading.Lock()


def get_presence() -> PresenceBackend:
    """This process's presence backend (created on first use)."""
    global _backend
    backend = _backend
    if backend is None:
        with _lock:
            if _backend is None:
                path = pulse_settings.PRESENCE_BACKEND
                try:
                    cls = import_string(path)
                except ImportError as exc:
                    raise ImportError(f"PULSE['PRESENCE_BACKEND'] {path!r} cannot be imported: {exc}") from exc
                _backend = cls()
            backend = _backend
    return backend


def reset_presence() -> None:
    """Forget the backend (its pending grace timers are cancelled, its connections closed)."""
    global _backend
    with _lock:
        backend, _backend = _backend, None
    if backend is not None:
        for handle in backend._pending_leaves.values():
            handle.cancel()
        close = getattr(backend, "close", None)
        if close is not None:
            close()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("PULSE", "CHANNEL_LAYERS"):
        reset_presence()
