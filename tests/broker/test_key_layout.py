"""Key layout: every key and pub/sub channel of one channel is in one hash slot, so every Lua script of a
channel runs on one Redis Cluster shard (docs/scaling.md). Checked by name for each backend, then by running
each script through redis-py's cluster client on a real 3-master cluster, which refuses cross-slot keys."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from redis.cluster import ClusterNode, RedisCluster, key_slot

from django_pulse.broker import keys, message_topic, presence_topic
from django_pulse.broker.redis import PUBLISH_SCRIPT, READ_SCRIPT, RedisBroker
from django_pulse.presence import redis as presence_redis
from tests.support.redis_topology import redis_cluster

CHANNELS = [("default", "posts"), ("kb_2", "room:42"), ("a-b", "x.y@z=~+-_")]


def _presence() -> presence_redis.RedisPresence:
    """A presence backend that is only asked for names (nothing listens on port 1)."""
    broker = RedisBroker(url="redis://127.0.0.1:1/0", prefix="pulse")
    return presence_redis.RedisPresence(url="redis://127.0.0.1:1/0", prefix="pulse", process_id="p1", broker=broker)


def _slot(name: str) -> int:
    return int(key_slot(name.encode()))


@pytest.mark.parametrize(("kb_id", "channel"), CHANNELS)
def test_every_key_of_a_channel_shares_one_slot(kb_id: str, channel: str) -> None:
    broker = RedisBroker(url="redis://127.0.0.1:1/0", prefix="pulse")
    presence = presence_redis.RedisPresence(
        url="redis://127.0.0.1:1/0",
        prefix="pulse",
        process_id="p1",
        broker=RedisBroker(url="redis://127.0.0.1:1/0", prefix="pulse"),
    )
    names = [
        broker.serial_key(message_topic(kb_id, channel)),
        broker.history_key(message_topic(kb_id, channel)),
        broker.redis_channel(message_topic(kb_id, channel)),
        broker.redis_channel(presence_topic(kb_id, channel)),
        presence.channel_key(kb_id, channel, "pres"),
        presence.channel_key(kb_id, channel, "pserial"),
        presence.channel_key(kb_id, channel, "pclients"),
        presence.bus(kb_id, channel),
        broker.idempotency_key(message_topic(kb_id, channel), "msg-1"),
    ]
    presence.close()
    assert len(set(names)) == len(names) - 1  # the presence bus channel is the broker's, named twice
    assert {_slot(n) for n in names} == {_slot("{" + kb_id + ":" + channel + "}")}


def test_bus_channel_names_give_back_their_topic() -> None:
    for topic in [message_topic("kb", "a:b"), presence_topic("kb", "c"), "ctl"]:
        name = keys.bus_channel("pulse", topic)
        assert keys.bus_topic(name.encode()[len("pulse:bus:") :]) == topic


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="REDIS_PREFIX"):
        RedisBroker(url="redis://127.0.0.1:1/0", prefix="my{app}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    with redis_cluster(masters=3, replicas=0) as nodes:
        client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes.startup_nodes], decode_responses=True)
        try:
            yield client
        finally:
            client.close()


@pytest.mark.processes
@pytest.mark.parametrize(("kb_id", "channel"), CHANNELS)
def test_broker_scripts_run_on_one_cluster_shard(cluster: RedisCluster, kb_id: str, channel: str) -> None:
    broker = RedisBroker(url="redis://127.0.0.1:1/0", prefix="pulse")
    topic = message_topic(kb_id, channel)
    publish = cluster.register_script(PUBLISH_SCRIPT)
    read = cluster.register_script(READ_SCRIPT)
    head = '{"action":"message","channel":"' + channel + '","serial":'
    pubsub = cluster.pubsub()
    pubsub.ssubscribe(broker.redis_channel(topic))
    keys_ = [broker.serial_key(topic), broker.redis_channel(topic), broker.history_key(topic)]
    args = [head, "E1", int(time.time() * 1000), 10, 60_000, channel, "SPUBLISH", "", 86_400_000, 30_000, 10_000]
    assert publish(keys=keys_, args=args) == 1
    assert publish(keys=keys_, args=args) == 2
    # An idempotent publish: the record of its id is a fourth key, in the same slot.
    once_keys, once_args = [*keys_, broker.idempotency_key(topic, "msg-1")], [*args, 60_000]
    assert publish(keys=once_keys, args=once_args) == [3, 0]
    assert publish(keys=once_keys, args=once_args) == [3, 1]  # a repeat: nothing published
    serial, epoch, entries, _fork_epoch, _fork_serial = read(
        keys=[broker.serial_key(topic), broker.history_key(topic)], args=["E2", 0, "", 10, 1000]
    )
    assert (int(serial), epoch, [e[0] for e in entries]) == (3, "E1", ["3-0", "2-0", "1-0"])
    # PUBLISH inside a script reaches the shard's sharded subscribers (the cluster broker's SSUBSCRIBE).
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 4 and time.monotonic() < deadline:
        message = pubsub.get_sharded_message(timeout=0.5)
        if message and message["type"] == "smessage":
            got.append(message["data"])
    pubsub.close()
    assert got[0].endswith('"reason":"history_lost"}')  # the counter was created by this publish
    assert got[1:] == [head + "1}", head + "2}", head + "3}"]


@pytest.mark.processes
def test_presence_scripts_run_on_one_cluster_shard(cluster: RedisCluster) -> None:
    presence = presence_redis.RedisPresence(
        url="redis://127.0.0.1:1/0",
        prefix="pulse",
        process_id="p1",
        broker=RedisBroker(url="redis://127.0.0.1:1/0", prefix="pulse"),
    )
    presence.close()
    kb_id, channel = "default", "lobby"
    channel_keys = presence._channel_keys(kb_id, channel)
    change = cluster.register_script(presence_redis._CHANGE)
    leave = cluster.register_script(presence_redis._LEAVE)
    snapshot = cluster.register_script(presence_redis._SNAPSHOT)
    adopt = cluster.register_script(presence_redis._ADOPT)
    entered = change(
        keys=channel_keys,
        args=["p1", "c1", '"c1"', '"alice"', '{"n":1}', 1000, 10, channel, "enter", "SPUBLISH", 5],
    )
    assert entered[:2] == ["enter", 1]
    assert adopt(keys=channel_keys[:1], args=["c1", "p1", "p2"]).startswith("p2\t")
    assert snapshot(keys=channel_keys[:2])[0] == 1
    assert leave(keys=channel_keys, args=["c1", '"c1"', channel, "p1", "SPUBLISH", 1000]) == ["absent"]  # p2 owns it
    assert leave(keys=channel_keys, args=["c1", '"c1"', channel, "p2", "SPUBLISH", 1000])[:2] == ["leave", 2]


@pytest.mark.processes
def test_a_script_given_keys_of_two_channels_is_refused_by_the_cluster(cluster: RedisCluster) -> None:
    """The check the tests above rely on: redis-py's cluster client refuses cross-slot scripts."""
    presence = presence_redis.RedisPresence(
        url="redis://127.0.0.1:1/0",
        prefix="pulse",
        process_id="p1",
        broker=RedisBroker(url="redis://127.0.0.1:1/0", prefix="pulse"),
    )
    presence.close()
    snapshot = cluster.register_script(presence_redis._SNAPSHOT)
    mixed = [presence.channel_key("default", "a", "pres"), presence.channel_key("default", "b", "pserial")]
    assert _slot(mixed[0]) != _slot(mixed[1])
    with pytest.raises(Exception, match="slot"):
        snapshot(keys=mixed)
