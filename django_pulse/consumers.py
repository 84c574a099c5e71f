"""Deprecated alias: the consumer is ``django_pulse.server.consumer.PulseConsumer``, graceful shutdown
``django_pulse.server.shutdown.shutdown`` (moved in 0.2; this alias goes in 0.3)."""

from __future__ import annotations

import warnings

from .server.consumer import Handler, PulseConsumer
from .server.shutdown import shutdown

__all__ = ["Handler", "PulseConsumer", "shutdown"]

warnings.warn(
    "django_pulse.consumers moved to django_pulse.server.consumer (PulseConsumer) and "
    "django_pulse.server.shutdown (shutdown); the old path is removed in 0.3.",
    DeprecationWarning,
    stacklevel=2,
)
