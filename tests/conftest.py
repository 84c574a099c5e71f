"""Shared fixtures. Redis: PULSE_TEST_REDIS_URL (default db 15); with CI=true a missing Redis fails the run."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("PULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _redis_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    """A reachable Redis URL; fails under CI=true when Redis is down, skips on a laptop without it."""
    if not _redis_reachable(REDIS_URL):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Redis is not reachable at {REDIS_URL}, and CI needs it.")
        pytest.skip(f"Redis is not reachable at {REDIS_URL} (set PULSE_TEST_REDIS_URL); Redis tests skipped.")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix for one test; its keys are deleted afterwards."""
    import redis

    prefix = f"pulsetest-{secrets.token_hex(4)}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def pulse_redis(settings: pytest.FixtureRequest, redis_url: str, redis_prefix: str) -> str:
    """Point PULSE at Redis with a unique prefix for this test."""
    settings.PULSE = {**(settings.PULSE or {}), "REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}  # type: ignore[attr-defined]
    return redis_url


@pytest.fixture(scope="session", autouse=True)
def _close_async_db_connections(django_db_setup: None, django_db_blocker: object) -> Iterator[None]:
    """Close connections opened by async ORM calls in asgiref's executor thread before the test databases are
    dropped (PostgreSQL refuses to drop a database that is still in use)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture(autouse=True)
def _fresh_pulse_process_state() -> Iterator[None]:
    """Each test starts with a fresh runtime (broker, hub, presence backend, liveness, app cache): they are per
    process, each test has its own loop, and rolled-back rows send no signals."""
    from django_pulse.server.runtime import reset_runtime

    reset_runtime()
    yield
    reset_runtime()
