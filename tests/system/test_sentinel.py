"""Redis Sentinel: a master failover while publishing (docs/scaling.md, "Redis Sentinel").

Each test starts its own 1 master + 1 replica + 3 sentinels on free loopback ports (tests/support/redis_topology.py),
points PULSE at the service with ``REDIS_SENTINEL`` and ``REDIS_WAIT_REPLICAS: 1``, publishes through the
broker every few milliseconds while the master is killed (or demoted), and checks what a user sees:

- every publish that reported success is in the new master's history, in serial order, no serial twice;
- the others raised ``Unavailable``;
- with one replica, a killed master leaves no replica to confirm writes: publishes fail (clearly) until one is
  back; with two replicas publishing carries on. A graceful ``SENTINEL FAILOVER`` keeps the old master as a
  replica, so one replica is enough;
- the subscriber gets a ``discontinuity`` and then the messages published on the new master, live;
- nothing was restarted: the same broker object carries on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from django_pulse.broker import message_topic
from django_pulse.broker.connection import SentinelConfig
from django_pulse.broker.redis import RedisBroker
from django_pulse.exceptions import Unavailable
from django_pulse.protocol import message_head
from django_pulse.server.runtime import get_runtime
from tests.support.redis_topology import SentinelGroup, call, sentinel_group

TOPIC = message_topic("default", "orders")


@pytest.fixture
def group(request: pytest.FixtureRequest) -> Iterator[SentinelGroup]:
    """1 master + 1 replica + 3 sentinels; ``parametrize("group", [2], indirect=True)`` for two replicas."""
    with sentinel_group(replicas=getattr(request, "param", 1)) as started:
        yield started


@pytest.fixture
def sentinel_settings(settings: Any, group: SentinelGroup) -> dict[str, Any]:
    settings.PULSE = {
        "REDIS_SENTINEL": {"service": group.service, "sentinels": group.sentinel_addresses},
        "REDIS_PREFIX": "pulse-sentinel-test",
        "REDIS_WAIT_REPLICAS": 1,
        "REDIS_WAIT_TIMEOUT": 2.0,  # generous: a loaded CI core can take over 0.5 s to acknowledge
    }
    return dict(settings.PULSE)


class Collect:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def push(self, message: dict[str, Any], nbytes: int) -> None:
        self.frames.append(json.loads(message["text"]))


def head(n: int) -> str:
    return message_head(channel="orders", name="e", data_json=json.dumps({"n": n}), id=f"m{n}", timestamp=1)


async def _publish_through(broker: RedisBroker, switch: Any, *, after_switch: int = 20, limit: float = 45.0) -> Any:
    """Publish n = 0, 1, 2, … every 10 ms; after 20 successes start ``switch()`` (in a thread: it returns once
    the sentinels name a new master) and go on until ``after_switch`` successes after it returned.
    Returns (n -> serial of each success, the n that raised, seconds from the switch's start to the first
    success on the new master, seconds the switch took)."""
    succeeded: dict[int, int] = {}
    failed: list[int] = []
    started: float | None = None
    switching: asyncio.Future[Any] | None = None
    switched_n: int | None = None
    n = 0
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            serial = await broker.publish_message(TOPIC, head(n))
        except Unavailable:
            failed.append(n)
        else:
            succeeded[n] = serial
        n += 1
        if switching is None and len(succeeded) == 20:
            started = time.monotonic()
            switching = asyncio.ensure_future(asyncio.to_thread(switch))
        if switching is not None and switching.done() and switched_n is None:
            switching.result()
            switched_n = n
        if switched_n is not None and sum(1 for k in succeeded if k >= switched_n) >= after_switch:
            break
        await asyncio.sleep(0.01)
    assert switched_n is not None and started is not None, f"no new master within {limit} s"
    assert switching is not None
    first = min((k for k in succeeded if k >= switched_n), default=None)
    assert first is not None, f"no publish succeeded within {limit} s of the switch"
    return succeeded, failed, switching.result(), time.monotonic() - started


async def _check_failover(group: SentinelGroup, switch: Any) -> None:
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    assert broker.url == f"sentinel://{group.service}"
    sink = Collect()
    await get_runtime().hub.subscribe(TOPIC, sink)
    epoch_before = (await broker.history(TOPIC)).epoch  # as a subscribe does: creates the counter and epoch
    old_master = group.master_address()

    succeeded, failed, switch_seconds, _total = await _publish_through(broker, switch)
    assert group.master_address() != old_master

    # Every publish reported as successful is in the new master's history, in order, each serial once.
    read = await broker.history(TOPIC, limit=1000)
    kept = {json.loads(frame)["data"]["n"]: serial for serial, frame in read.frames}
    assert {n: kept.get(n) for n in succeeded} == succeeded
    serials = [succeeded[n] for n in sorted(succeeded)]
    assert serials == sorted(set(serials))
    assert all(n not in succeeded for n in failed)

    # The subscriber is told it may have missed messages, then hears the new master live.
    await asyncio.wait_for(_until(lambda: any(f["action"] == "discontinuity" for f in sink.frames)), 20)
    serial = await _publish_until_confirmed(broker, head(10_000))
    await asyncio.wait_for(_until(lambda: sink.frames[-1].get("serial") == serial), 5)
    # The new master started a new epoch (it cannot know which serials the old one handed out unreplicated):
    # between two discontinuities (the reconnect's, and history_lost if the subscriber was back in time to
    # hear the epoch change), live serials only grow.
    reasons = {f["reason"] for f in sink.frames if f["action"] == "discontinuity"}
    assert "broker_unavailable" in reasons and reasons <= {"broker_unavailable", "history_lost"}
    stretches: list[list[int]] = [[]]
    for frame in sink.frames:
        if frame["action"] == "discontinuity":
            stretches.append([])
        elif frame["action"] == "message":
            stretches[-1].append(frame["serial"])
    assert all(serials == sorted(set(serials)) for serials in stretches), stretches
    assert (await broker.history(TOPIC)).epoch != epoch_before
    # What docs/scaling.md quotes, visible with pytest -s.
    print(f"failover: new master after {switch_seconds:.2f} s; {len(failed)} publishes failed meanwhile")
    await get_runtime().hub.unsubscribe(TOPIC, sink)
    await broker.aclose()


async def _publish_until_confirmed(broker: RedisBroker, text: str, timeout: float = 15.0) -> int:
    """A publish retried while the replicas are being reconfigured (each failure is an Unavailable)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await broker.publish_message(TOPIC, text)
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("group", [2], indirect=True, ids=["2 replicas"])
async def test_kill_9_of_the_master_while_publishing(group: SentinelGroup, sentinel_settings: dict[str, Any]) -> None:
    def kill() -> float:
        old = group.master_address()
        group.node(old).kill()
        return group.wait_for_new_master(old)

    await _check_failover(group, kill)


@pytest.mark.slow
async def test_sentinel_failover_command_while_publishing(
    group: SentinelGroup, sentinel_settings: dict[str, Any]
) -> None:
    def failover() -> float:
        old = group.master_address()
        call(group.sentinels[0].port, "SENTINEL", "FAILOVER", group.service)
        return group.wait_for_new_master(old)

    await _check_failover(group, failover)


@pytest.mark.slow
async def test_a_publish_no_replica_confirms_fails_clearly(
    group: SentinelGroup, sentinel_settings: dict[str, Any]
) -> None:
    """With the only replica gone, WAIT cannot be satisfied: the publish raises (it may have been delivered:
    the message says so) instead of reporting a success a failover could lose."""
    broker = get_runtime().broker
    assert isinstance(broker, RedisBroker)
    assert await broker.publish_message(TOPIC, head(1)) == 1
    group.replicas[0].kill()
    with pytest.raises(Unavailable, match="it was published and its id is consumed"):
        await broker.publish_message(TOPIC, head(2))
    await broker.aclose()


def test_sentinel_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="unknown keys: sentinal"):
        SentinelConfig.from_setting({"service": "s", "sentinels": [("h", 1)], "sentinal": 1})
    with pytest.raises(ValueError, match="needs 'service' and 'sentinels'"):
        SentinelConfig.from_setting({"service": "s"})
    config = SentinelConfig.from_setting(
        {"service": "s", "sentinels": [["10.0.0.1", "26379"]], "password": "pw", "sentinel_password": "spw"}
    )
    assert config.sentinels == (("10.0.0.1", 26379),)
    assert config.node_kwargs()["password"] == "pw"
    assert config.sentinel_kwargs()["password"] == "spw"


def test_the_documented_sentinel_setting_is_valid() -> None:
    """The PULSE snippet of docs/scaling.md is what users copy: it must pass the setting's validation."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "REDIS_SENTINEL" in block)
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    config = SentinelConfig.from_setting(namespace["PULSE"]["REDIS_SENTINEL"])
    assert config.service == "mymaster" and len(config.sentinels) == 3
    assert config.ssl and config.node_kwargs()["ssl_ca_certs"] == "/etc/ssl/redis-ca.pem"
    assert namespace["PULSE"]["REDIS_WAIT_REPLICAS"] == 1


def test_system_checks_refuse_a_bad_sentinel_setting_and_a_braced_prefix() -> None:
    from django.core import checks
    from django.test import override_settings

    def ids() -> set[str]:
        return {message.id for message in checks.run_checks() if message.id}

    with override_settings(PULSE={"REDIS_SENTINEL": {"service": "s"}}):
        assert "django_pulse.E040" in ids()
    with override_settings(PULSE={"REDIS_SENTINEL": {"service": "s", "sentinels": [("h", 26379)]}}):
        assert "django_pulse.E040" not in ids()
    with override_settings(PULSE={"REDIS_PREFIX": "app{1}"}):
        assert "django_pulse.E041" in ids()
