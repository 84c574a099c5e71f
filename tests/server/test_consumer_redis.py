"""The consumer over the Redis broker, in-process: delivery, and a discontinuity after a broker outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async

from django_pulse import pulse
from django_pulse.broker.redis import RedisBroker
from django_pulse.server.runtime import get_runtime
from tests.broker.test_broker import kill_subscriber
from tests.support.wsutil import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


@pytest.fixture
async def redis_broker(pulse_redis: str) -> AsyncIterator[RedisBroker]:
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    yield broker
    await broker.aclose()


async def test_publish_and_receive_over_redis(redis_broker: RedisBroker) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.request("subscribe", channel="posts")
    await bob.request("subscribe", channel="posts")
    await pulse.apublish("posts", "e", 1)
    await sync_to_async(pulse.publish)("posts", "e", 2)
    await bob.request("publish", channel="posts", name="e", data=3)
    for client in (alice, bob):
        frames = [await client.recv() for _ in range(3)]
        assert [(f["data"], f["serial"]) for f in frames] == [(1, 1), (2, 2), (3, 3)]
    await alice.request("unsubscribe", channel="posts")
    await pulse.apublish("posts", "e", 4)
    assert (await bob.recv())["serial"] == 4
    assert await alice.nothing()
    await alice.close()
    await bob.close()


async def test_discontinuity_after_the_broker_connection_breaks(redis_broker: RedisBroker, pulse_redis: str) -> None:
    alice = await connect("alice")
    await alice.request("subscribe", channel="posts")
    await alice.request("subscribe", channel="other")
    await asyncio.to_thread(kill_subscriber, pulse_redis, redis_broker.client_name)
    frames = [await alice.recv(timeout=10) for _ in range(2)]
    assert sorted(f["channel"] for f in frames) == ["other", "posts"]
    assert all(
        f == {"action": "discontinuity", "channel": f["channel"], "reason": "broker_unavailable"} for f in frames
    )
    await pulse.apublish("posts", "e", "live again")
    assert (await alice.recv())["data"] == "live again"
    await alice.close()


async def test_control_messages_cross_processes(redis_broker: RedisBroker, pulse_redis: str, redis_prefix: str) -> None:
    """A disable/revoke sent by another process (its own broker) closes this process's connections."""
    alice, bob = await connect("alice"), await connect("bob")
    elsewhere = RedisBroker(pulse_redis, redis_prefix)
    try:
        from django_pulse.broker import CONTROL_TOPIC

        await asyncio.to_thread(
            elsewhere.broadcast_sync, CONTROL_TOPIC, '{"type":"disconnect","kbId":"default","clientId":"alice"}'
        )
        assert await alice.closed() == 4005
        assert await bob.nothing()
        await sync_to_async(pulse.close_app_connections)()
        assert await bob.closed() == 4003
    finally:
        await elsewhere.aclose()
        await alice.close()
        await bob.close()
