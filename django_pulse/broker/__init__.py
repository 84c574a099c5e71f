"""Brokers: ``get_broker()`` returns this process's broker (``PULSE["BROKER_BACKEND"]``, by dotted path).

The instance is created on first use and replaced when ``PULSE`` changes (``setting_changed``), so tests
with ``override_settings`` get a broker for their settings. The hub (``fanout.get_hub()``) is reset with it.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .base import CONTROL_TOPIC, Broker, HistoryRead, message_topic, presence_topic, topic_channel

__all__ = [
    "CONTROL_TOPIC",
    "Broker",
    "HistoryRead",
    "get_broker",
    "message_topic",
    "presence_topic",
    "reset_broker",
    "topic_channel",
]

_lock = threading.Lock()
_broker: Broker | None = None


def get_broker() -> Broker:
    """This process's broker, created from ``pulse_settings.BROKER_BACKEND`` on first use."""
    global _broker
    broker = _broker
    if broker is not None:
        return broker
    with _lock:
        if _broker is None:
            from ..conf import pulse_settings

            backend = import_string(pulse_settings.BROKER_BACKEND)
            instance = backend()
            if not isinstance(instance, Broker):
                raise TypeError(f"PULSE['BROKER_BACKEND'] {pulse_settings.BROKER_BACKEND!r} is not a Broker")
            _broker = instance
        return _broker


def reset_broker() -> None:
    """Forget this process's broker and hub (they are rebuilt on next use)."""
    global _broker
    with _lock:
        old, _broker = _broker, None
    if old is not None:
        old.close_nowait()
    from ..fanout import reset_hub

    reset_hub()


def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in ("PULSE", "CHANNEL_LAYERS"):
        reset_broker()


setting_changed.connect(_on_setting_changed, dispatch_uid="django_pulse.broker.reset")
