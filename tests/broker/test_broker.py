"""Brokers, memory and Redis: serials assigned with the broadcast, order, subscriptions, outages."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from django_pulse.broker import CONTROL_TOPIC, Broker, keys, message_topic, presence_topic
from django_pulse.broker.memory import MemoryBroker
from django_pulse.broker.redis import RedisBroker
from django_pulse.exceptions import Unavailable
from django_pulse.protocol import message_head
from django_pulse.server.runtime import get_runtime
from tests.support.servers import free_port


class Collect:
    """A sink that records what the hub delivers (stands in for a socket's outbox)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.arrived = asyncio.Event()

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        self.texts.append(message["text"])
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 5) -> list[dict[str, Any]]:
        async def until() -> None:
            while len(self.texts) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(until(), timeout)
        return [json.loads(t) for t in self.texts]


async def attach(topic: str, sink: Collect) -> int:
    """Subscribe ``sink`` as the consumer does: the hub first, then the counter read (which creates the channel's
    epoch); returns the serial read."""
    await get_runtime().hub.subscribe(topic, sink)
    return (await get_runtime().broker.history(topic)).serial


def head(n: int | str, channel: str = "posts") -> str:
    return message_head(channel=channel, name="e", data_json=json.dumps({"n": n}), id=f"m{n}", timestamp=1)


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest, settings: Any) -> AsyncIterator[Broker]:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        settings.PULSE = {"REDIS_URL": url, "REDIS_PREFIX": prefix}
    else:
        settings.PULSE = {}
    instance = get_runtime().broker
    expected = RedisBroker if request.param == "redis" else MemoryBroker
    assert isinstance(instance, expected)
    yield instance
    await instance.aclose()


def test_topic_names() -> None:
    assert message_topic("default", "posts") == "m:default:posts"
    assert presence_topic("kb1", "room:1") == "p:kb1:room:1"
    assert CONTROL_TOPIC == "ctl"


async def test_serials_increase_by_one_in_publish_order(broker: Broker) -> None:
    topic = message_topic("default", "posts")
    sink = Collect()
    assert await attach(topic, sink) == 0
    serials = [await broker.publish_message(topic, head(i)) for i in range(5)]
    assert serials == [1, 2, 3, 4, 5]
    frames = await sink.wait_for(5)
    assert [f["serial"] for f in frames] == [1, 2, 3, 4, 5]
    assert [f["data"]["n"] for f in frames] == [0, 1, 2, 3, 4]
    assert await broker.last_serial(topic) == 5
    assert (await broker.history(topic)).epoch


async def test_sync_publishes_from_threads_keep_serial_order(broker: Broker) -> None:
    topic = message_topic("default", "posts")
    sink = Collect()
    await attach(topic, sink)

    def worker(tag: str) -> None:
        for i in range(20):
            broker.publish_message_sync(topic, head(f"{tag}{i}"))

    threads = [threading.Thread(target=worker, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for i in range(20):  # and async publishes on the loop, interleaved
        await broker.publish_message(topic, head(f"c{i}"))
        await asyncio.sleep(0)
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    frames = await sink.wait_for(60)
    assert [f["serial"] for f in frames] == list(range(1, 61))
    for tag in "abc":
        mine = [f["data"]["n"] for f in frames if f["data"]["n"].startswith(tag)]
        assert mine == [f"{tag}{i}" for i in range(20)]


async def test_topics_are_isolated_and_unsubscribe_stops_delivery(broker: Broker) -> None:
    a, b = message_topic("kb1", "posts"), message_topic("kb2", "posts")
    sink_a, sink_b = Collect(), Collect()
    hub = get_runtime().hub
    await attach(a, sink_a)
    await attach(b, sink_b)
    assert hub.local_topics() == {a: 1, b: 1}
    await broker.publish_message(a, head(1))
    await broker.publish_message(b, head(2))
    assert [f["data"]["n"] for f in await sink_a.wait_for(1)] == [1]
    assert [f["data"]["n"] for f in await sink_b.wait_for(1)] == [2]
    await hub.unsubscribe(a, sink_a)
    assert hub.local_topics() == {b: 1}
    await broker.publish_message(a, head(3))
    await broker.publish_message(b, head(4))
    await sink_b.wait_for(2)
    assert len(sink_a.texts) == 1


async def test_broadcast_carries_complete_frames(broker: Broker) -> None:
    sink = Collect()
    await get_runtime().hub.subscribe("p:default:room", sink)
    await broker.broadcast("p:default:room", '{"action":"presence","n":1}')
    await asyncio.to_thread(broker.broadcast_sync, "p:default:room", '{"action":"presence","n":2}')
    frames = await sink.wait_for(2)
    assert [f["n"] for f in frames] == [1, 2]


@pytest.mark.redis
async def test_redis_publish_from_another_process_reaches_subscriber(pulse_redis: str, redis_prefix: str) -> None:
    """A second broker instance (another process's) publishes; this process's subscription receives it."""
    here = get_runtime().broker
    assert isinstance(here, RedisBroker)
    other = RedisBroker(pulse_redis, redis_prefix)
    topic = message_topic("default", "posts")
    sink = Collect()
    try:
        await attach(topic, sink)
        assert await other.publish_message(topic, head(1)) == 1
        assert await asyncio.to_thread(other.publish_message_sync, topic, head(2)) == 2
        assert [f["serial"] for f in await sink.wait_for(2)] == [1, 2]
        assert here.redis_channel(topic) == keys.bus_channel(redis_prefix, topic)
    finally:
        await other.aclose()
        await here.aclose()


@pytest.mark.redis
async def test_redis_unreachable_raises_unavailable(settings: Any) -> None:
    settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_PREFIX": "pulsetest-down"}
    broker = get_runtime().broker
    topic = message_topic("default", "posts")
    try:
        with pytest.raises(Unavailable):
            await broker.publish_message(topic, head(1))
        with pytest.raises(Unavailable):
            await asyncio.to_thread(broker.publish_message_sync, topic, head(1))
        with pytest.raises(Unavailable):
            await broker.broadcast(topic, "{}")
        with pytest.raises(Unavailable):
            await get_runtime().hub.subscribe(topic, Collect())
        assert get_runtime().hub.local_topics() == {}
    finally:
        await broker.aclose()


def kill_subscriber(url: str, client_name: str) -> None:
    """Kill exactly this broker's pub/sub connection (found by its CLIENT SETNAME name)."""
    admin = redis.Redis.from_url(url)
    try:
        ids = [c["id"] for c in admin.client_list(_type="pubsub") if c.get("name") == client_name]
        assert len(ids) == 1, ids
        admin.client_kill_filter(_id=ids[0])
    finally:
        admin.close()


@pytest.mark.redis
async def test_redis_reconnects_and_signals_discontinuity(pulse_redis: str) -> None:
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    topic = message_topic("default", "posts")
    sink = Collect()
    try:
        await attach(topic, sink)
        await broker.publish_message(topic, head(1))
        await sink.wait_for(1)
        await asyncio.to_thread(kill_subscriber, pulse_redis, broker.client_name)
        frames = await sink.wait_for(2, timeout=10)
        assert frames[1] == {"action": "discontinuity", "channel": "posts", "reason": "broker_unavailable"}
        # Live again: later messages arrive, with the next serial.
        await broker.publish_message(topic, head(2))
        frames = await sink.wait_for(3)
        assert frames[2]["serial"] == 2
    finally:
        await broker.aclose()


@pytest.mark.redis
async def test_a_burst_of_commands_in_flight_is_not_refused(redis_url: str, redis_prefix: str, settings: Any) -> None:
    """300 commands in flight at once on one process's asyncio client (a reconnect storm's recovery
    announcements): redis-py 8 caps a pool at 100 connections by default and refused the rest."""
    settings.PULSE = {"REDIS_URL": redis_url, "REDIS_PREFIX": redis_prefix}
    broker = get_runtime().broker
    topic = message_topic("default", "storm")
    await asyncio.gather(*[broker.broadcast(topic, "{}") for _ in range(300)])
    await asyncio.gather(*[broker.publish_message(topic, head(i, "storm")) for i in range(300)])
    assert (await broker.history(topic)).serial == 300
    await broker.aclose()
