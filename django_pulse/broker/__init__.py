"""Brokers: move frames between server processes, assign per-channel serials, keep history.

``build_broker()`` makes the broker ``PULSE["BROKER_BACKEND"]`` names (a dotted path); this process's one
instance is owned by the runtime (``django_pulse.server.runtime.Runtime.broker``), which rebuilds it
when settings change.
"""

from __future__ import annotations

from django.utils.module_loading import import_string

from .base import CONTROL_TOPIC, Broker, Delivery, HistoryRead, message_topic, presence_topic, topic_channel

__all__ = [
    "CONTROL_TOPIC",
    "Broker",
    "Delivery",
    "HistoryRead",
    "build_broker",
    "message_topic",
    "presence_topic",
    "topic_channel",
]


def build_broker() -> Broker:
    """A new broker of the class ``pulse_settings.BROKER_BACKEND`` names; raises TypeError if it is not one."""
    from .._conf import pulse_settings

    backend = import_string(pulse_settings.BROKER_BACKEND)
    instance = backend()
    if not isinstance(instance, Broker):
        raise TypeError(f"PULSE['BROKER_BACKEND'] {pulse_settings.BROKER_BACKEND!r} is not a Broker")
    return instance
