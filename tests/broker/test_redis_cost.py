"""What one publish and one presence change cost Redis, counted with INFO commandstats on a Redis server of the
test's own (docs/scaling.md, "Measured constants"). Commands a script runs are counted too, so these are the
exact command counts and round trips the capacity model uses."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from django_pulse.broker import message_topic
from django_pulse.protocol import message_head
from django_pulse.server.runtime import get_runtime
from tests.support.redis_topology import RedisNode, start_node

pytestmark = pytest.mark.processes

N = 50


@pytest.fixture
def own_redis(settings: Any) -> Iterator[RedisNode]:
    with tempfile.TemporaryDirectory(prefix="pulse-cost-") as root:
        node = start_node(Path(root))
        settings.PULSE = {"REDIS_URL": node.url, "REDIS_PREFIX": "cost"}
        try:
            yield node
        finally:
            node.stop()


def _stats(node: RedisNode) -> dict[str, int]:
    client = redis.Redis(host="127.0.0.1", port=node.port)
    try:
        info = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in info.items()}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    # HELLO and INFO are this test's own reading of the stats.
    changed = (k for k in after if after[k] != before.get(k, 0) and k not in ("hello", "info"))
    return {k: (after[k] - before.get(k, 0)) / N for k in changed}


def _head(n: int) -> str:
    return message_head(channel="posts", name="e", data_json=json.dumps({"n": n}), id=f"m{n}", timestamp=1)


async def test_a_publish_is_one_round_trip_of_seven_commands(own_redis: RedisNode) -> None:
    broker = get_runtime().broker
    topic = message_topic("default", "posts")
    await broker.publish_message(topic, _head(0))  # loads the script, creates the counter
    before = _stats(own_redis)
    for n in range(N):
        await broker.publish_message(topic, _head(n))
    per_publish = _delta(before, _stats(own_redis))
    print("per publish:", per_publish)
    # The two PEXPIREs: the history's HISTORY_TTL and the counter's CHANNEL_TTL (idle channels age out); XLEN:
    # history is trimmed by count only where it is older than HISTORY_MIN_RETENTION (below HISTORY_SIZE, it is
    # not trimmed at all).
    assert per_publish == {"evalsha": 1, "hincrby": 1, "xadd": 1, "xlen": 1, "pexpire": 2, "publish": 1}
    await broker.aclose()


async def test_a_presence_enter_and_leave_cost(own_redis: RedisNode) -> None:
    presence = get_runtime().presence
    await presence.enter("default", "room", client_id="warmup", connection_id="c-warm", data={})
    await presence.leave("default", "room", connection_id="c-warm")
    # One member stays, so the leaves below never vacate the channel (that costs 3 more commands, counted apart).
    await presence.enter("default", "room", client_id="stay", connection_id="c-stay", data={})

    before = _stats(own_redis)
    for n in range(N):
        await presence.enter("default", "room", client_id=f"u{n}", connection_id=f"c{n}", data={"n": n})
    per_enter = _delta(before, _stats(own_redis))
    before = _stats(own_redis)
    for n in range(N):
        await presence.leave("default", "room", connection_id=f"c{n}")
    per_leave = _delta(before, _stats(own_redis))
    print("per enter:", per_enter, "per leave:", per_leave)
    # Round trips: the process's index (a pipeline of 2), the script, the channel index. Inside the script, the
    # client's count (HGET, HINCRBY: PRESENCE_MAX_MEMBERS_PER_CLIENT), the anonymous members' count (HGET:
    # PRESENCE_MAX_ANONYMOUS_MEMBERS) and the serial kept while members are present.
    assert per_enter == {
        "sadd": 2,
        "evalsha": 1,
        "hget": 3,
        "hincrby": 1,
        "hlen": 2,
        "hset": 1,
        "incr": 1,
        "persist": 1,
        "publish": 1,
        "zincrby": 1,
    }
    # Round trips: the script, the index. Inside the script the client's count goes down (and, at 0, away).
    assert per_leave == {
        "evalsha": 1,
        "hget": 1,
        "hdel": 2,
        "hincrby": 1,
        "hlen": 1,
        "incr": 1,
        "publish": 1,
        "srem": 1,
    }
    await presence.aclose()


def test_a_batch_of_idempotent_publishes_is_one_script_per_channel_in_order_once_per_id(
    own_redis: RedisNode,
) -> None:
    # The outbox relay's round: rows of several channels, published in one pipeline (one round trip).
    broker = get_runtime().broker
    topics = [message_topic("default", "posts"), message_topic("default", "orders")]
    batch = [(topics[n % 2], _head(n), f"m{n}") for n in range(N)]
    # Loads the script and creates both counters (a channel's first publish also sends its history_lost notice).
    broker.publish_once_batch_sync([(topic, _head(-1), f"warm{topic}") for topic in topics], 60_000)
    before = _stats(own_redis)
    replies = broker.publish_once_batch_sync(batch, 60_000)
    spent = {k: v * N for k, v in _delta(before, _stats(own_redis)).items()}
    print("per batch:", spent)
    assert spent["evalsha"] == 2 and spent["publish"] == N  # one script per channel, every message published
    assert replies == [(2 + n // 2, False) for n in range(N)]
    frames = [json.loads(text)["data"]["n"] for _serial, text in broker.history_sync(topics[0], limit=N).frames]
    assert frames == [-1, *range(0, N, 2)]  # the channel's order is the batch's
    before = _stats(own_redis)
    assert broker.publish_once_batch_sync(batch, 60_000) == [(serial, True) for serial, _ in replies]
    assert "publish" not in _delta(before, _stats(own_redis))  # a repeated batch delivers nothing
    broker.close_nowait()
