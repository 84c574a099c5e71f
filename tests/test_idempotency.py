"""Idempotency claims of message ids: in process memory, and in Redis (shared by every process)."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from django_pulse.exceptions import Unavailable
from django_pulse.protocol import ErrorCode
from django_pulse.server.runtime import get_runtime
from tests.servers import free_port


def fresh_id() -> str:
    return f"m-{secrets.token_hex(6)}"


def test_memory_claim_once_per_app_and_channel() -> None:
    mid = fresh_id()
    assert get_runtime().idempotency.claim("default", "posts", mid)
    assert not get_runtime().idempotency.claim("default", "posts", mid)
    assert get_runtime().idempotency.claim("default", "other", mid)  # another channel: another message
    assert get_runtime().idempotency.claim("shop", "posts", mid)  # another app: another message


def test_memory_release_lets_a_retry_through() -> None:
    mid = fresh_id()
    assert get_runtime().idempotency.claim("default", "posts", mid)
    get_runtime().idempotency.release("default", "posts", mid)
    assert get_runtime().idempotency.claim("default", "posts", mid)


def test_memory_claim_expires_after_the_window(settings: Any) -> None:
    settings.PULSE = {"IDEMPOTENCY_WINDOW": 0.2}
    mid = fresh_id()
    assert get_runtime().idempotency.claim("default", "posts", mid)
    assert not get_runtime().idempotency.claim("default", "posts", mid)
    time.sleep(0.5)
    assert get_runtime().idempotency.claim("default", "posts", mid)


async def test_memory_async_shares_the_sync_record() -> None:
    mid = fresh_id()
    assert get_runtime().idempotency.claim("default", "posts", mid)
    assert not await get_runtime().idempotency.aclaim("default", "posts", mid)
    await get_runtime().idempotency.arelease("default", "posts", mid)
    assert await get_runtime().idempotency.aclaim("default", "posts", mid)


@pytest.mark.redis
def test_redis_claim_is_set_nx_with_expiry(pulse_redis: str, redis_prefix: str, settings: Any) -> None:
    import redis

    settings.PULSE = {**settings.PULSE, "IDEMPOTENCY_WINDOW": 30}
    mid = fresh_id()
    assert get_runtime().idempotency.claim("default", "posts", mid)
    assert not get_runtime().idempotency.claim("default", "posts", mid)
    client = redis.Redis.from_url(pulse_redis)
    try:
        key = f"{redis_prefix}:idem:default:posts:{mid}"
        assert 0 < client.pttl(key) <= 30_000
        get_runtime().idempotency.release("default", "posts", mid)
        assert not client.exists(key)
    finally:
        client.close()
    assert get_runtime().idempotency.claim("default", "posts", mid)


@pytest.mark.redis
async def test_redis_async_claim(pulse_redis: str) -> None:
    mid = fresh_id()
    assert await get_runtime().idempotency.aclaim("default", "posts", mid)
    assert not get_runtime().idempotency.claim("default", "posts", mid)  # the sync path sees the async claim
    await get_runtime().idempotency.arelease("default", "posts", mid)
    assert await get_runtime().idempotency.aclaim("default", "posts", mid)


def test_redis_down_is_unavailable_not_a_duplicate(settings: Any) -> None:
    settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    with pytest.raises(Unavailable) as info:
        get_runtime().idempotency.claim("default", "posts", fresh_id())
    assert info.value.code is ErrorCode.UNAVAILABLE
    get_runtime().idempotency.release("default", "posts", fresh_id())  # best effort: no error while Redis is down
