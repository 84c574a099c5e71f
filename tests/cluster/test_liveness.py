"""The process registry: liveness in Redis, channels across processes, re-entering after a false death."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from django_pulse import pulse
from django_pulse.cluster.liveness import MemoryLiveness, RedisLiveness
from django_pulse.presence.redis import RedisPresence
from django_pulse.server.runtime import get_runtime
from tests.support.wsutil import connect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def registry(pulse_redis: str) -> AsyncIterator[RedisLiveness]:
    from django_pulse.server.runtime import get_runtime

    instance = get_runtime().liveness
    assert isinstance(instance, RedisLiveness)
    yield instance
    await instance.stop()
    await get_runtime().broker.aclose()


@pytest.fixture
def store(pulse_redis: str) -> Any:
    client = redis.Redis.from_url(pulse_redis, decode_responses=True)
    yield client
    client.close()


async def test_a_connection_registers_the_process(registry: RedisLiveness, store: Any) -> None:
    alice = await connect("alice")
    await alice.request("subscribe", channel="posts")
    await registry.beat()
    pid = registry.process_id
    assert store.sismember(registry.key("procs"), pid)
    assert 0 < store.pttl(registry.process_key("proc", pid)) <= 12_000
    assert store.hgetall(registry.process_key("proctopics", pid))["m:default:posts"] == "1"
    status = registry.status_sync()
    assert status["backend"] == "redis" and status["connections"] == 1 and status["topics"] == 1
    assert [p["id"] for p in status["processes"]] == [pid]
    await alice.close()
    await registry.stop()
    assert not store.exists(registry.process_key("proc", pid))
    assert not store.sismember(registry.key("procs"), pid)


async def test_a_wrongly_swept_process_enters_its_members_again(registry: RedisLiveness, store: Any) -> None:
    alice = await connect("alice")
    await alice.request("presence.enter", channel="room", data={"name": "Alice"})
    watcher = await connect("watcher")
    await watcher.request("presence.subscribe", channel="room")
    pid = registry.process_id
    # The process stalls: its key expires and another process sweeps it.
    store.delete(registry.process_key("proc", pid))
    other = RedisPresence(process_id="other", broker=get_runtime().broker)
    try:
        swept = await other.sweep_process(pid)
    finally:
        other.close()
    assert swept is not None and [c.member.client_id for c in swept] == ["alice"]
    assert (await pulse.apresence("room"))["count"] == 0
    left = await watcher.recv()
    assert (left["event"], left["member"]["clientId"]) == ("leave", "alice")
    # Its next heartbeat notices and re-enters the members of connections it still serves.
    await registry.beat()
    back = await watcher.recv()
    assert (back["event"], back["member"]["clientId"], back["member"]["data"]) == ("enter", "alice", {"name": "Alice"})
    assert [m["clientId"] for m in (await pulse.apresence("room"))["members"]] == ["alice"]
    # Clean close: leaves once.
    await alice.close()
    gone = await watcher.recv()
    assert (gone["event"], gone["member"]["clientId"]) == ("leave", "alice")
    assert isinstance(get_runtime().presence, RedisPresence)
    await watcher.close()


async def test_memory_registry_counts_the_local_hub() -> None:
    registry = get_runtime().liveness
    assert isinstance(registry, MemoryLiveness)
    alice, bob = await connect("alice"), await connect("bob")
    await alice.request("subscribe", channel="posts")
    await bob.request("subscribe", channel="posts")
    await bob.request("subscribe", channel="news")
    await alice.request("presence.enter", channel="posts")
    assert await pulse.achannels() == [
        {"name": "news", "subscribers": 1, "presence": 0},
        {"name": "posts", "subscribers": 2, "presence": 1},
    ]
    status = registry.status_sync()
    assert (status["backend"], status["connections"], status["topics"]) == ("memory", 2, 2)
    await alice.close()
    await bob.close()
    assert await pulse.achannels() == []
    assert registry.status_sync()["connections"] == 0
