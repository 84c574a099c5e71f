"""Busy channels through a Redis failover (docs/scaling.md, "What a failover can and cannot lose"): two server
processes, 2 channels at 50 messages per second each published through one process's HTTP endpoint, WebSocket
subscribers of both channels on both processes, and the master holding the channels killed with kill -9.

What a user sees: every publish answered 200 reaches every subscriber, live or by the resume the
``discontinuity`` asks for, exactly once and in order, although more than ``HISTORY_SIZE`` (100) messages per
channel are published while the processes reconnect; the servers log one WARNING per change of state, no ERROR
per refused publish. With one replica and ``REDIS_WAIT_REPLICAS = 1`` publishes are refused (503) until the old
master is back as a replica, and the same holds for what was acknowledged. Each test prints its timings
(``pytest -s``): docs/scaling.md quotes them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.crc import key_slot

from tests.support.failover import Follower, Publishers
from tests.support.redis_topology import RedisCluster, RedisNode, redis_cluster, sentinel_group
from tests.support.servers import LiveServer, live_pair

pytestmark = pytest.mark.slow  # two server processes and a Redis topology each

RATE = 50  # messages per second per channel: the rate at which 1,496 of 2,036 acknowledged publishes were lost
CHANNELS = ["orders", "trades"]
COMMON = {"HISTORY_SIZE": 100, "REDIS_WAIT_REPLICAS": 1, "REDIS_WAIT_TIMEOUT": 0.5}


async def _through_failover(
    servers: tuple[LiveServer, LiveServer],
    channels: list[str],
    kill: Any,
    *,
    after: float = 4.0,
    limit: float = 40.0,
) -> dict[str, Any]:
    """Subscribers of ``channels`` on both processes, publishers on the first; ``kill()`` (in a thread, it
    returns once the topology has a new master) after 1.5 s of publishing; publishing goes on until ``after``
    seconds of acknowledged publishes past the switch. Then every subscriber must hold every acknowledged id."""
    followers = [await Follower.start(s, f"sub{i}-{c}", c) for i, s in enumerate(servers) for c in channels]
    publishers = Publishers(servers[1], channels, rate=RATE)
    try:
        await asyncio.sleep(1.5)
        killed_at = time.monotonic() - publishers.started
        switched = await asyncio.to_thread(kill)
        deadline = time.monotonic() + limit
        while True:
            last = max(publishers.acknowledged_at.values(), default=0.0)
            if last - killed_at > switched + after:
                break
            assert time.monotonic() < deadline, f"publishing did not resume: {publishers.refused[-3:]}"
            await asyncio.sleep(0.1)
    finally:
        publishers.stop()
    for follower in followers:
        await follower.caught_up(publishers.acknowledged[follower.channel], timeout=20)
    try:
        for follower in followers:
            follower.check(publishers.acknowledged[follower.channel])
    finally:
        for follower in followers:
            await follower.close()
    # Every resume ran on the new master, whose first read of the channel forked a new epoch from the old one:
    # each follower resumed exactly across it.
    assert all(len(f.epochs) == 2 for f in followers), [f.epochs for f in followers]
    refused = [r for r in publishers.refused if r[2] > killed_at]
    return {
        "switched": switched,
        "refusal_window": max((r[2] for r in refused), default=killed_at) - killed_at,
        "refused": len(refused),
        "acknowledged": publishers.count(),
        "discontinuities": sum(len(f.discontinuities) for f in followers),
        "resumes": sum(f.resumes for f in followers),
        "followers": followers,
        # Resumes that crossed into the epoch the new master started (forked from the old one): exact all the
        # same. A resume made before the first publish on the new master stays in the old epoch.
        "crossed": sum(len(f.epochs) > 1 for f in followers),
        "refusals": {r[3] for r in refused},
    }


def _check_logs(servers: tuple[LiveServer, LiveServer], *, sentinel: bool = True) -> None:
    """The operator's view: a line per change of state (the subscriber connection lost and back, the master
    switched, the heartbeat failing and back, calls failing and succeeding again), no traceback, nothing per
    refused publish (the servers log messages only: tests/server_settings.py)."""
    for server in servers:
        lines = [line for line in server.log().splitlines() if not line.startswith("127.0.0.1:")]  # access log
        assert not any("Traceback" in line for line in lines), "\n".join(lines)
        # Lines count changes of state, so their number follows the failovers, never the refused publishes: on
        # a loaded machine Sentinel may fail over twice (its first promotion did not finish within
        # failover-timeout), and each switch brings its own lost/back and fail/succeed pairs.
        switches = max(1, sum(line.startswith("Redis Sentinel: the master moved from") for line in lines))
        assert len(lines) <= 12 * switches, "\n".join(lines)
        failing = sum(line.startswith("Redis broker: calls fail") for line in lines)
        recovered = sum(line.startswith("Redis broker: calls succeed again") for line in lines)
        assert recovered <= failing <= recovered + 1, "\n".join(lines)
        if sentinel:  # the process heard the switch from the sentinels
            assert any(line.startswith("Redis Sentinel: the master moved from") for line in lines), lines


def _print(what: str, result: dict[str, Any]) -> None:
    print(
        f"\n{what}: new master {result['switched']:.2f} s after the kill; publishes refused until "
        f"{result['refusal_window']:.2f} s after it; {result['refused']} refused; {result['acknowledged']} "
        f"acknowledged, all delivered to 4 subscribers; {result['discontinuities']} discontinuities, "
        f"{result['resumes']} resumes ({result['crossed']} into the new epoch); refusals: {sorted(result['refusals'])}"
    )


def _sentinel_pulse(group: Any) -> dict[str, Any]:
    return {
        "REDIS_SENTINEL": {"service": group.service, "sentinels": group.sentinel_addresses},
        "REDIS_PREFIX": "failover-sentinel",
        **COMMON,
    }


async def test_sentinel_kill_9_with_two_replicas_loses_no_acknowledged_message() -> None:
    with sentinel_group(replicas=2) as group, live_pair(pulse=_sentinel_pulse(group)) as servers:

        def kill() -> float:
            old = group.master_address()
            group.node(old).kill()
            return group.wait_for_new_master(old)

        result = await _through_failover(servers, CHANNELS, kill)
        _print("sentinel, 2 replicas", result)
        # Publishing went on while the processes reconnected: more than HISTORY_SIZE per channel is the case
        # that trimmed the gap before.
        assert result["discontinuities"] >= 4
        _check_logs(servers)


async def test_sentinel_kill_9_with_one_replica_refuses_until_a_replica_is_back() -> None:
    """No replica is left to confirm writes until the old master is restarted and rejoins as a replica: the
    refusal window docs/scaling.md states. Nothing acknowledged is lost meanwhile or after."""
    with sentinel_group(replicas=1) as group, live_pair(pulse=_sentinel_pulse(group)) as servers:
        killed: list[RedisNode] = []

        def kill() -> float:
            old = group.master_address()
            node = group.node(old)
            node.kill()
            killed.append(node)
            switched = group.wait_for_new_master(old)
            node.restart()  # an operator (or a supervisor) brings the old master back; it rejoins as a replica
            return switched

        result = await _through_failover(servers, CHANNELS, kill)
        _print("sentinel, 1 replica, REDIS_WAIT_REPLICAS 1", result)
        assert result["refused"] > 0
        # Said as it is: the publish ran but no replica holds it (its id is consumed: a retry with the same id is
        # not delivered again).
        unconfirmed = "Redis replicas did not confirm the message in time: it was published"
        assert any(refusal.startswith(unconfirmed) for refusal in result["refusals"])
        _check_logs(servers)


def _same_master_channels(cluster: RedisCluster) -> tuple[list[str], int]:
    """Two channel names whose slots the same master serves, and that master's port."""
    owner: dict[int, list[str]] = {}
    n = 0
    while True:
        name = f"ch{n}"
        port = cluster.node_for_slot(int(key_slot(f"{{default:{name}}}".encode()))).port
        owner.setdefault(port, []).append(name)
        if len(owner[port]) == 2:
            return owner[port], port
        n += 1


async def test_cluster_kill_9_of_the_channels_master_loses_no_acknowledged_message() -> None:
    with redis_cluster(masters=3, replicas=2) as cluster:
        channels, port = _same_master_channels(cluster)
        pulse = {"REDIS_CLUSTER": {"nodes": cluster.startup_nodes[:3]}, "REDIS_PREFIX": "failover-cluster", **COMMON}
        with live_pair(pulse=pulse) as servers:
            victim = next(n for n in cluster.nodes if n.port == port)

            def kill() -> float:
                start = time.monotonic()
                victim.kill()
                slot = int(key_slot(f"{{default:{channels[0]}}}".encode()))

                def promoted() -> bool:
                    return cluster.node_for_slot(slot).port != port

                from tests.support.redis_topology import wait_until

                wait_until(promoted, 30, "a replica promoted")
                return time.monotonic() - start

            result = await _through_failover(servers, channels, kill)
            _print("cluster, 2 replicas per master", result)
            assert result["discontinuities"] >= 4
            _check_logs(servers, sentinel=False)
