"""Pulse in process memory for a test: ``pulse_in_memory()``, ``reset_pulse_state()``, ``PulseTestMixin``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.test.utils import override_settings

from .capture import PublishedMessage, PulseCapture, capture_published

__all__ = ["PulseTestMixin", "pulse_in_memory", "reset_pulse_state"]


# -- configuration ---------------------------------------------------------------------------------------


def reset_pulse_state() -> None:
    """Forget the process's Pulse state (the runtime: broker, hub, presence, liveness, app cache); the next use
    builds it again from the current settings."""
    from ..server.runtime import reset_runtime

    reset_runtime()


_MEMORY_BACKENDS = {
    "REDIS_URL": None,
    "BROKER_BACKEND": "django_pulse.broker.memory.MemoryBroker",
    "PRESENCE_BACKEND": "django_pulse.presence.memory.MemoryPresence",
}


@contextlib.contextmanager
def pulse_in_memory(**pulse: Any) -> Iterator[None]:
    """Run with Pulse (and the default channel layer) in process memory and fresh state: no Redis is touched.

    Keyword arguments are ``PULSE`` settings for the duration, over the project's own (e.g. ``HISTORY_SIZE=10``).
    """
    merged = {**(getattr(settings, "PULSE", None) or {}), **_MEMORY_BACKENDS, **pulse}
    layers = {**(getattr(settings, "CHANNEL_LAYERS", None) or {})}
    layers["default"] = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    reset_pulse_state()
    try:
        with override_settings(PULSE=merged, CHANNEL_LAYERS=layers):
            yield
    finally:
        reset_pulse_state()


class PulseTestMixin:
    """For ``TestCase`` / ``TransactionTestCase``: each test runs with ``pulse_in_memory()`` and a capture in
    ``self.pulse_published``; ``assertPublished`` / ``assertNotPublished`` are its assertions.

    Set ``pulse_settings = {...}`` on the class for extra ``PULSE`` settings.
    """

    pulse_settings: dict[str, Any] = {}
    pulse_published: PulseCapture

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        stack = contextlib.ExitStack()
        stack.enter_context(pulse_in_memory(**self.pulse_settings))
        self.pulse_published = stack.enter_context(capture_published())
        self.addCleanup(stack.close)  # type: ignore[attr-defined]

    def assertPublished(self, *args: Any, **kwargs: Any) -> PublishedMessage:
        """``PulseCapture.assert_published`` on this test's capture (the same arguments)."""
        return self.pulse_published.assert_published(*args, **kwargs)

    def assertNotPublished(self, *args: Any, **kwargs: Any) -> None:
        """``PulseCapture.assert_not_published`` on this test's capture (the same arguments)."""
        self.pulse_published.assert_not_published(*args, **kwargs)
