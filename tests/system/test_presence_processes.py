"""Presence across two real daphne processes sharing Redis, including one of them being killed with SIGKILL."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from django_pulse import pulse
from django_pulse.clients.websocket import Realtime
from tests.support.servers import LiveServer, live_pair

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

# Small liveness timings keep the test fast: a killed process is swept at most TIMEOUT + HEARTBEAT after its
# last heartbeat (the defaults, 12 s + 3 s, give at most 15 s; docs/presence.md).
FAST = {"PROCESS_HEARTBEAT": 0.5, "PROCESS_TIMEOUT": 2.0}


async def client(server: LiveServer, client_id: str) -> Realtime:
    token = await asyncio.to_thread(server.token, client_id)
    return await Realtime.connect(token["endpoint"], token["token"], origin=server.url)


async def next_presence(rt: Realtime, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = await rt.next_event(max(0.01, deadline - time.monotonic()))
        if frame["action"] == "presence":
            return frame


def client_ids(members: list[dict[str, Any]]) -> list[str]:
    return sorted(m["clientId"] for m in members)


async def test_members_on_two_processes_and_a_killed_process_leaves(
    pulse_redis: str, redis_prefix: str, settings: Any
) -> None:
    settings.PULSE = {**settings.PULSE, **FAST}
    with live_pair(redis_url=pulse_redis, redis_prefix=redis_prefix, pulse=FAST) as (a, b):
        watcher = await client(b, "watcher")
        await watcher.request("presence.subscribe", channel="posts")
        alice, alice2 = await client(a, "alice"), await client(a, "alice")  # two tabs on process A
        bob = await client(b, "bob")
        await alice.subscribe("posts")
        for rt, name in ((alice, "Alice"), (alice2, "Alice"), (bob, "Bob")):
            await rt.request("presence.enter", channel="posts", data={"name": name})
        entered = [await next_presence(watcher, 5) for _ in range(3)]
        assert sorted(f["member"]["clientId"] for f in entered) == ["alice", "alice", "bob"]

        # The same members, listed by both processes and by the SDK here.
        for rt in (alice, bob):
            reply = await rt.request("presence.get", channel="posts")
            assert client_ids(reply["members"]) == ["alice", "alice", "bob"]
        result = await pulse.apresence("posts")
        assert (result["count"], result["clientCount"]) == (3, 2)
        await asyncio.sleep(FAST["PROCESS_HEARTBEAT"] * 2)  # subscriber counts travel with the heartbeats
        assert await pulse.achannels() == [{"name": "posts", "subscribers": 1, "presence": 3}]

        # SIGKILL process A: no close frames, no shutdown code. B sweeps A's members.
        killed = time.monotonic()
        a.kill()
        left = [await next_presence(watcher, 20), await next_presence(watcher, 20)]
        elapsed = time.monotonic() - killed
        assert [(f["event"], f["member"]["clientId"]) for f in left] == [("leave", "alice"), ("leave", "alice")]
        assert {f["member"]["connectionId"] for f in left} == {alice.connection_id, alice2.connection_id}
        assert elapsed < FAST["PROCESS_TIMEOUT"] + FAST["PROCESS_HEARTBEAT"] + 3
        assert client_ids((await pulse.apresence("posts"))["members"]) == ["bob"]
        assert client_ids((await bob.request("presence.get", channel="posts"))["members"]) == ["bob"]
        assert await pulse.achannels() == [{"name": "posts", "subscribers": 0, "presence": 1}]
        # Exactly once: no further leave for them.
        with pytest.raises(TimeoutError):
            await next_presence(watcher, FAST["PROCESS_HEARTBEAT"] * 3)
        for rt in (watcher, bob):
            await rt.close()
