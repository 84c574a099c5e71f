"""Redis Cluster: the cluster broker and presence on a real 3-master + 3-replica cluster (docs/scaling.md).

Each test starts its cluster on free loopback ports (tests/support/redis_topology.py) and points PULSE at it with
``REDIS_CLUSTER``. What a user sees:

- messages, history and presence on channels whose slots are on different masters, each delivered live in
  serial order;
- one pub/sub connection per shard master per process, whatever the number of channels (``CLIENT LIST``),
  and each channel ``SSUBSCRIBE``d once on the master of its slot (``PUBSUB SHARDNUMSUB``);
- a master killed (kill -9) while publishing: its replica is promoted, every publish either raised
  ``Unavailable`` or is in the new master's history under the serial it reported, the subscribers of that
  shard's channels get a ``discontinuity`` and then live messages; the other shards' channels are untouched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from django_pulse.broker import message_topic
from django_pulse.broker.connection import ClusterConfig
from django_pulse.broker.redis_cluster import RedisClusterBroker
from django_pulse.exceptions import Unavailable
from django_pulse.protocol import message_head
from django_pulse.server.runtime import get_runtime
from tests.support.redis_topology import RedisCluster, call, redis_cluster, wait_until

PREFIX = "pulse-cluster-test"


@pytest.fixture
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster(masters=3, replicas=1) as started:
        yield started


@pytest.fixture
def cluster_settings(settings: Any, cluster: RedisCluster) -> dict[str, Any]:
    settings.PULSE = {
        "REDIS_CLUSTER": {"nodes": cluster.startup_nodes[:2]},
        "REDIS_PREFIX": PREFIX,
        "HISTORY_SIZE": 10_000,
    }
    return dict(settings.PULSE)


def slot_of(channel: str, kb_id: str = "default") -> int:
    return int(key_slot(f"{{{kb_id}:{channel}}}".encode()))


def channels_on_every_master(cluster: RedisCluster, per_master: int) -> dict[int, list[str]]:
    """``per_master`` channel names for each master (by port), by the master serving their slot now."""
    found: dict[int, list[str]] = {m.port: [] for m in cluster.masters}
    owners = _slot_owners(cluster)
    n = 0
    while any(len(v) < per_master for v in found.values()):
        name = f"ch{n}"
        port = owners[slot_of(name)]
        if len(found[port]) < per_master:
            found[port].append(name)
        n += 1
    return found


def _slot_owners(cluster: RedisCluster) -> dict[int, int]:
    import redis

    node = next(n for n in cluster.nodes if n.alive)
    client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
    try:
        owners = {}
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            for slot in range(int(start), int(end) + 1):
                owners[slot] = int(primary[1])
        return owners
    finally:
        client.close()


class Collect:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        self.frames.append(json.loads(message["text"]))


def head(channel: str, n: int) -> str:
    return message_head(channel=channel, name="e", data_json=json.dumps({"n": n}), id=f"{channel}-{n}", timestamp=1)


async def _until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        await asyncio.sleep(0.02)


def test_the_cluster_setting_is_validated_and_selects_the_cluster_broker(settings: Any) -> None:
    from django.core import checks

    from django_pulse._conf import pulse_settings

    with pytest.raises(ValueError, match="needs 'nodes'"):
        ClusterConfig.from_setting({"password": "x"})
    with pytest.raises(ValueError, match="unknown keys: node"):
        ClusterConfig.from_setting({"nodes": [("h", 1)], "node": 1})
    config = ClusterConfig.from_setting({"nodes": [["10.0.0.1", "6379"]], "password": "pw", "ssl": True})
    assert config.nodes == (("10.0.0.1", 6379),)
    assert config.node_kwargs()["password"] == "pw" and config.node_kwargs()["ssl"] is True

    settings.PULSE = {"REDIS_CLUSTER": {"nodes": [("127.0.0.1", 7000)]}}
    assert pulse_settings.REDIS_URL == "cluster://"
    assert pulse_settings.BROKER_BACKEND == "django_pulse.broker.redis_cluster.RedisClusterBroker"
    assert pulse_settings.PRESENCE_BACKEND == "django_pulse.presence.redis.RedisPresence"

    def ids() -> set[str]:
        return {message.id for message in checks.run_checks() if message.id}

    assert not {"django_pulse.E080", "django_pulse.E081", "django_pulse.E082"} & ids()
    settings.PULSE = {"REDIS_CLUSTER": {"nodes": []}}
    assert "django_pulse.E080" in ids()
    settings.PULSE = {
        "REDIS_CLUSTER": {"nodes": [("h", 1)]},
        "REDIS_SENTINEL": {"service": "s", "sentinels": [("h", 2)]},
    }
    assert "django_pulse.E081" in ids()
    settings.PULSE = {
        "REDIS_CLUSTER": {"nodes": [("h", 1)]},
        "BROKER_BACKEND": "django_pulse.broker.redis.RedisBroker",
    }
    assert "django_pulse.E082" in ids()


def test_the_documented_cluster_setting_is_valid() -> None:
    """The PULSE snippet of docs/scaling.md is what users copy: it must pass the setting's validation."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "REDIS_CLUSTER" in block)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    config = ClusterConfig.from_setting(namespace["PULSE"]["REDIS_CLUSTER"])
    assert len(config.nodes) == 3 and config.ssl and config.password


@pytest.mark.django_db(transaction=True)
async def test_messages_history_and_presence_on_every_shard(
    cluster: RedisCluster, cluster_settings: dict[str, Any]
) -> None:
    runtime = get_runtime()
    broker = runtime.broker
    assert isinstance(broker, RedisClusterBroker)
    by_master = channels_on_every_master(cluster, per_master=4)
    channels = [c for names in by_master.values() for c in names]
    sinks = {c: Collect() for c in channels}
    for channel in channels:
        await runtime.hub.subscribe(message_topic("default", channel), sinks[channel])

    # Interleaved publishes on 12 channels over 3 shards: each channel's serials 1..5, live, in order.
    for n in range(5):
        for channel in channels:
            assert await broker.publish_message(message_topic("default", channel), head(channel, n)) == n + 1
    for channel in channels:
        await _until(lambda c=channel: len([f for f in sinks[c].frames if f["action"] == "message"]) == 5, 10, channel)
        messages = [f for f in sinks[channel].frames if f["action"] == "message"]
        assert [m["serial"] for m in messages] == [1, 2, 3, 4, 5]
        assert [m["data"]["n"] for m in messages] == [0, 1, 2, 3, 4]
        read = await broker.history(message_topic("default", channel), after=2, limit=100)
        assert [serial for serial, _frame in read.frames] == [3, 4, 5]
    # The synchronous path (a sync view, a management command) reaches the same shard.
    channel = channels[-1]
    assert (
        await asyncio.to_thread(broker.publish_message_sync, message_topic("default", channel), head(channel, 5)) == 6
    )
    assert (await asyncio.to_thread(broker.history_sync, message_topic("default", channel))).serial == 6

    # Presence on every shard, through the SDK (scripts on the channel's shard, events by SPUBLISH).
    from django_pulse import pulse

    presence_sink = Collect()
    first = by_master[cluster.masters[0].port][0]
    await runtime.hub.subscribe(f"p:default:{first}", presence_sink)
    for i, name in enumerate(channels):
        await runtime.presence.enter("default", name, client_id=f"user{i}", connection_id=f"conn{i}", data={"i": i})
    for i, name in enumerate(channels):
        answer = await pulse.apresence(name)
        assert [m["clientId"] for m in answer["members"]] == [f"user{i}"]
    await _until(lambda: any(f.get("action") == "presence" for f in presence_sink.frames), 10, "presence event")
    from asgiref.sync import sync_to_async

    # (sync_to_async: the database connection stays in asgiref's thread, which the fixtures close.)
    listed = {c["name"]: c["presence"] for c in await sync_to_async(pulse.channels)()}
    assert all(listed.get(name) == 1 for name in channels), listed
    await runtime.presence.leave("default", first, connection_id="conn0")
    assert (await pulse.apresence(first))["count"] == 0
    await broker.aclose()


async def test_one_pubsub_connection_per_shard_whatever_the_channels(
    cluster: RedisCluster, cluster_settings: dict[str, Any]
) -> None:
    runtime = get_runtime()
    broker = runtime.broker
    assert isinstance(broker, RedisClusterBroker)
    by_master = channels_on_every_master(cluster, per_master=20)
    sink = Collect()
    for names in by_master.values():
        for channel in names:
            await runtime.hub.subscribe(message_topic("default", channel), sink)

    # Each master: exactly one pub/sub connection of this process, holding its 20 channels (+ ctl on one).
    for master in cluster.masters:
        clients = call(master.port, "CLIENT", "LIST").splitlines()
        mine = [line for line in clients if f"name={broker.client_name} " in line]
        assert len(mine) == 1, clients
        shard_channels = int(mine[0].split(" ssub=")[1].split(" ")[0])
        assert shard_channels >= 20
        for channel in by_master[master.port]:
            name = broker.redis_channel(message_topic("default", channel))
            assert call(master.port, "PUBSUB", "SHARDNUMSUB", name) == f"{name},1"
    assert sorted(broker.shard_connections().values())[0] >= 20
    assert len(broker.shard_connections()) == 3

    # Unsubscribing the last local subscriber leaves the shard channel.
    channel = by_master[cluster.masters[0].port][0]
    await runtime.hub.unsubscribe(message_topic("default", channel), sink)
    name = broker.redis_channel(message_topic("default", channel))
    wait_until(lambda: call(cluster.masters[0].port, "PUBSUB", "SHARDNUMSUB", name) == f"{name},0", 5, "SUNSUBSCRIBE")
    await broker.aclose()


@pytest.mark.slow
async def test_kill_9_of_a_master_while_publishing(cluster: RedisCluster, settings: Any) -> None:
    """Publishes round-robin on channels of every shard; one master is killed; with REDIS_WAIT_REPLICAS 1 every
    publish reported successful survives the failover. The killed node is restarted once its replica has been
    promoted (it rejoins as that shard's replica), so WAIT can be satisfied again on the shard."""
    settings.PULSE = {
        "REDIS_CLUSTER": {"nodes": cluster.startup_nodes},
        "REDIS_PREFIX": PREFIX,
        "HISTORY_SIZE": 10_000,
        "REDIS_WAIT_REPLICAS": 1,
        "REDIS_WAIT_TIMEOUT": 0.5,
    }
    runtime = get_runtime()
    broker = runtime.broker
    assert isinstance(broker, RedisClusterBroker)
    by_master = channels_on_every_master(cluster, per_master=2)
    victim = cluster.masters[0]
    doomed = set(by_master[victim.port])
    channels = [c for names in by_master.values() for c in names]
    sinks = {c: Collect() for c in channels}
    for channel in channels:
        await runtime.hub.subscribe(message_topic("default", channel), sinks[channel])
    epochs = {c: (await broker.history(message_topic("default", c))).epoch for c in channels}
    # The synchronous path with WAIT (sync views, commands): on the slot's master, confirmed by its replica.
    first = channels[0]
    assert await asyncio.to_thread(broker.publish_message_sync, message_topic("default", first), head(first, -1)) == 1

    succeeded: dict[tuple[str, int], int] = {}
    failed: list[tuple[str, int]] = []
    n = 0
    killed_at: float | None = None
    promoted_after: float | None = None
    first_success_after: float | None = None
    restart: asyncio.Future[Any] | None = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for channel in channels:
            try:
                serial = await broker.publish_message(message_topic("default", channel), head(channel, n))
            except Unavailable:
                failed.append((channel, n))
            else:
                succeeded[(channel, n)] = serial
                if killed_at is not None and channel in doomed and first_success_after is None:
                    first_success_after = time.monotonic() - killed_at
        n += 1
        if n == 10:
            victim.kill()
            killed_at = time.monotonic()

            def promote_then_restart() -> float:
                took = wait_until(lambda: slot_owner_port(cluster, doomed) != victim.port, 30, "promotion")
                victim.restart()
                return took

            restart = asyncio.ensure_future(asyncio.to_thread(promote_then_restart))
        if restart is not None and restart.done() and promoted_after is None:
            promoted_after = restart.result()
        recent = sum(1 for (c, k) in succeeded if c in doomed and k > n - 5)
        if first_success_after is not None and promoted_after is not None and recent >= 2 * len(doomed):
            break
        await asyncio.sleep(0.01)
    assert killed_at is not None and promoted_after is not None, "no promotion"
    assert first_success_after is not None, "no publish succeeded on the promoted master"

    for channel in channels:
        topic = message_topic("default", channel)
        read = await broker.history(topic, limit=100_000)
        kept = {json.loads(frame)["data"]["n"]: serial for serial, frame in read.frames}
        mine = {k: s for (c, k), s in succeeded.items() if c == channel}
        # Every publish reported successful is in the (new) master's history under the serial it reported.
        assert {k: kept.get(k) for k in mine} == mine, channel
        assert all((channel, k) not in succeeded for (c, k) in failed if c == channel)
        # Live: serials only grow between discontinuities; the last success arrives live.
        last = max(mine.values())
        await _until(lambda c=channel, s=last: any(f.get("serial") == s for f in sinks[c].frames), 15, channel)
        stretch: list[int] = []
        for frame in sinks[channel].frames:
            if frame["action"] == "discontinuity":
                stretch = []
            elif frame["action"] == "message":
                assert not stretch or frame["serial"] > stretch[-1], sinks[channel].frames
                stretch.append(frame["serial"])
        discontinuities = [f["reason"] for f in sinks[channel].frames if f["action"] == "discontinuity"]
        if channel in doomed:
            # Told it may have missed messages; a new epoch on the promoted master (no exact resume across it).
            assert "broker_unavailable" in discontinuities, sinks[channel].frames[-5:]
            assert read.epoch != epochs[channel]
        else:
            assert discontinuities == [], discontinuities
            assert read.epoch == epochs[channel]
    doomed_failed = sum(1 for c, _k in failed if c in doomed)
    print(
        f"cluster failover: replica promoted after {promoted_after:.2f} s; first publish on it "
        f"{first_success_after:.2f} s after the kill; {doomed_failed} publishes on that shard failed, "
        f"{sum(1 for c, _k in failed if c not in doomed)} on the others"
    )
    await broker.aclose()


def slot_owner_port(cluster: RedisCluster, channels: set[str]) -> int:
    return cluster.node_for_slot(slot_of(next(iter(channels)))).port


async def test_a_channel_whose_slot_moves_to_another_master_is_followed(
    cluster: RedisCluster, cluster_settings: dict[str, Any]
) -> None:
    """Resharding: the slot of a subscribed channel is migrated (keys and all) to another master. The process
    notices (the old master unsubscribes the shard channel, or the periodic slot-map read), subscribes on the new
    master, tells its subscribers (``discontinuity``), and the channel carries on there; publishes meanwhile
    either fail or are kept; redirections (MOVED, ASK) are followed by the publishing client."""
    runtime = get_runtime()
    broker = runtime.broker
    assert isinstance(broker, RedisClusterBroker)
    by_master = channels_on_every_master(cluster, per_master=1)
    source, target = cluster.masters[0], cluster.masters[1]
    channel = by_master[source.port][0]
    other = by_master[target.port][0]
    topic = message_topic("default", channel)
    sink, other_sink = Collect(), Collect()
    for name, collect in ((channel, sink), (other, other_sink)):
        await runtime.hub.subscribe(message_topic("default", name), collect)
        await broker.history(message_topic("default", name))  # as a subscribe does: the counter and its epoch
    for n in range(3):
        assert await broker.publish_message(topic, head(channel, n)) == n + 1
    await _until(lambda: len(sink.frames) == 3, 10, "before the move")

    slot = slot_of(channel)
    source_id, target_id = call(source.port, "CLUSTER", "MYID"), call(target.port, "CLUSTER", "MYID")
    call(target.port, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
    call(source.port, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
    names = call(source.port, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split(",")
    assert len(names) == 2  # the serial counter and the history stream
    # Half-way: one key moved, one not. A publish is redirected (ASK/TRYAGAIN) or refused, never half-applied.
    call(source.port, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", names[0])
    try:
        midway = await broker.publish_message(topic, head(channel, 3))
    except Unavailable:
        midway = None
    call(source.port, "MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", names[1])
    for node in cluster.masters:
        call(node.port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
    moved_at = time.monotonic()

    await _until(lambda: any(f["action"] == "discontinuity" for f in sink.frames), 15, "a discontinuity")
    resubscribed = time.monotonic() - moved_at
    # The publishing client follows MOVED to the new master; the history moved with the keys.
    serials = [await broker.publish_message(topic, head(channel, n)) for n in range(4, 7)]
    expected_first = 5 if midway is not None else 4
    assert serials == list(range(expected_first, expected_first + 3))
    serial = await broker.publish_message(topic, head(channel, 7))
    await _until(
        lambda: any(f.get("serial") == serial for f in sink.frames),
        10,
        f"live messages from the new master: {sink.frames} {broker.shard_connections()} {target.port}",
    )
    assert call(target.port, "PUBSUB", "SHARDNUMSUB", broker.redis_channel(topic)).endswith(",1")
    read = await broker.history(topic, limit=100)
    assert [s for s, _f in read.frames][:3] == [1, 2, 3]
    # The other channel, on a master that kept its slots, saw nothing of it.
    await broker.publish_message(message_topic("default", other), head(other, 0))
    await _until(lambda: len(other_sink.frames) >= 1, 10, f"the other shard: {other_sink.frames}")
    assert [f["action"] for f in other_sink.frames] == ["message"], other_sink.frames
    print(f"resharding: the subscriber was on the new master {resubscribed:.2f} s after the slot moved")
    await broker.aclose()


def test_a_batch_of_idempotent_publishes_runs_on_each_channels_shard_in_order_once(
    cluster: RedisCluster, cluster_settings: dict[str, Any]
) -> None:
    # The outbox relay's round: rows of channels served by every master, in one call (a script per channel,
    # routed to its slot's master).
    broker = get_runtime().broker
    assert isinstance(broker, RedisClusterBroker)
    channels = [names[0] for names in channels_on_every_master(cluster, per_master=1).values()]
    batch = [(message_topic("default", c), head(c, n), f"{c}-{n}") for n in range(4) for c in channels]
    replies = broker.publish_once_batch_sync(batch, 60_000)
    assert replies == [(n + 1, False) for n in range(4) for _ in channels]
    for channel in channels:
        read = broker.history_sync(message_topic("default", channel), limit=10)
        assert [json.loads(frame)["data"]["n"] for _serial, frame in read.frames] == [0, 1, 2, 3]
    assert broker.publish_once_batch_sync(batch, 60_000) == [(serial, True) for serial, _ in replies]
    broker.close_nowait()
