"""The pytest plugin of django-pulse (registered through the ``pytest11`` entry point, so it loads by itself
wherever django-pulse is installed; docs/testing.md).

Fixtures:

- ``pulse_memory``: the test runs with Pulse in process memory and fresh state (``pulse_in_memory()``).
- ``pulse_published``: a ``PulseCapture`` of what the test publishes (implies ``pulse_memory``)::

      def test_order_is_published(db, pulse_published):
          order = Order.objects.create(number=1)
          pulse_published.assert_published(f"orders.{order.pk}", "created")
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import PulseCapture, capture_published, pulse_in_memory

__all__ = ["pulse_memory", "pulse_published"]


@pytest.fixture
def pulse_memory() -> Iterator[None]:
    """Pulse (broker, presence, channel layer) in process memory with fresh state for this test."""
    with pulse_in_memory():
        yield


@pytest.fixture
def pulse_published(pulse_memory: None) -> Iterator[PulseCapture]:
    """What this test publishes: ``.messages``, ``.assert_published(...)``, ``.assert_not_published(...)``."""
    with capture_published() as capture:
        yield capture
