"""Fixtures of the in-process server tests: each test on both brokers, and the runtime stopped on the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture(params=["memory", "redis"])
def broker_kind(request: pytest.FixtureRequest, settings: Any) -> str:
    """The test runs twice: on the in-memory broker, and on Redis (``pulse_redis``: a key prefix of its own)."""
    if request.param == "redis":
        request.getfixturevalue("pulse_redis")
    return str(request.param)


@pytest.fixture
async def runtime_stopped() -> AsyncIterator[None]:
    """After the test, its process registry (liveness loop) and broker are stopped on the test's loop: no task
    or socket of one test outlives it into the next."""
    yield
    from django_pulse.server.runtime import get_runtime

    runtime = get_runtime()
    await runtime.liveness.stop()
    await runtime.broker.aclose()


@pytest.fixture
def backend(broker_kind: str, runtime_stopped: None) -> str:
    """``broker_kind`` for a test on the event loop: its runtime is stopped afterwards."""
    return broker_kind
