"""Fixtures of the HTTP API's tests: the default app, an API key of it, and throttle counts cleared around each
test (they live in Django's cache, which outlives a test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.core.cache import cache

from django_pulse.models import PulseApp


@pytest.fixture(autouse=True)
def _clear_throttle_counts() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def app() -> PulseApp:
    return PulseApp.objects.ensure("default")[0]


@pytest.fixture
def key(app: PulseApp) -> str:
    return app.create_key("tests")[1]
