"""A server process dies (SIGKILL) or is stopped (SIGTERM) while holding 100 presence members and subscribers:
the survivors are told every leave, within 20 s after a crash (default liveness timings) and PRESENCE_GRACE
after a graceful stop (the members are handed over for clients that continue their connection; these do not);
the SDK lists only live members and channels; the clients reconnect to the survivor."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from django_pulse import pulse
from django_pulse.clients.websocket import Realtime
from tests.support.servers import LiveServer, live_pair

pytestmark = [pytest.mark.reliability, pytest.mark.slow, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

MEMBERS = 100


async def connect(server: LiveServer, client_id: str) -> Realtime:
    token = await asyncio.to_thread(server.token, client_id)
    return await Realtime.connect(server.ws_url, token["token"])


async def join(server: LiveServer, client_id: str) -> Realtime:
    """A client that subscribes to the room and is present on it."""
    rt = await connect(server, client_id)
    await rt.subscribe("room")
    await rt.request("presence.enter", channel="room", data={"who": client_id})
    return rt


async def presence_events(rt: Realtime, event: str, count: int, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while len(found) < count:
        frame = await rt.next_event(max(0.01, deadline - time.monotonic()))
        if frame["action"] == "presence" and frame["event"] == event:
            found.append(frame)
    return found


async def setup_room(doomed: LiveServer, survivor: LiveServer) -> tuple[list[Realtime], list[Realtime], list[Realtime]]:
    watchers = [await connect(survivor, f"watcher{i}") for i in range(3)]
    for rt in watchers:
        await rt.request("presence.subscribe", channel="room")
        await rt.subscribe("room")
    semaphore = asyncio.Semaphore(20)

    async def limited(server: LiveServer, client_id: str) -> Realtime:
        async with semaphore:
            return await join(server, client_id)

    doomed_members = list(await asyncio.gather(*(limited(doomed, f"m{i}") for i in range(MEMBERS))))
    survivors = [await join(survivor, f"s{i}") for i in range(10)]
    for rt in watchers:
        await presence_events(rt, "enter", MEMBERS + 10, 30)
    return watchers, doomed_members, survivors


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
async def test_a_dead_process_s_100_members_leave_and_come_back(
    pulse_redis: str, redis_prefix: str, settings: Any, how: str
) -> None:
    with live_pair(redis_url=pulse_redis, redis_prefix=redis_prefix) as (doomed, survivor):
        watchers, members, survivors = await setup_room(doomed, survivor)
        assert (await pulse.apresence("room"))["count"] == MEMBERS + 10
        doomed_ids = {rt.connection_id for rt in members}

        started = time.monotonic()
        if how == "SIGKILL":
            doomed.kill()  # no close frames, no shutdown code: the survivor sweeps the dead process
            bound = 20.0  # PROCESS_TIMEOUT + PROCESS_HEARTBEAT (15 s by default) + slack
        else:
            # Closes its connections 1001 and hands their members over (docs/deployment.md): these clients come
            # back as new connections (no recover), so nobody adopts them and they leave when the draining
            # process's key expires: PRESENCE_GRACE (15 s) + PROCESS_HEARTBEAT (3 s) + slack.
            doomed.proc.send_signal(signal.SIGTERM)
            bound = 25.0
        for rt in watchers:
            left = await presence_events(rt, "leave", MEMBERS, bound + 5)
            assert {f["member"]["connectionId"] for f in left} == doomed_ids
        elapsed = time.monotonic() - started
        assert elapsed < bound, elapsed
        if how == "SIGTERM":
            assert {await asyncio.wait_for(rt.wait_closed(), 5) for rt in members} == {1001}

        # Only the living are listed, by the SDK and by the survivor.
        snapshot = await pulse.apresence("room")
        assert sorted(m["clientId"] for m in snapshot["members"]) == sorted(f"s{i}" for i in range(10))
        reply = await watchers[0].request("presence.get", channel="room")
        assert len(reply["members"]) == 10
        deadline = time.monotonic() + 10  # subscriber counts travel with the heartbeats (3 s)
        while True:
            listed = await pulse.achannels()
            if listed == [{"name": "room", "subscribers": 3 + 10, "presence": 10}] or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert listed == [{"name": "room", "subscribers": 3 + 10, "presence": 10}]

        # The dropped clients reconnect to the survivor, subscribe and enter again.
        again = [await join(survivor, f"m{i}") for i in range(MEMBERS)]
        for rt in watchers:
            await presence_events(rt, "enter", MEMBERS, 20)
        assert (await pulse.apresence("room"))["count"] == MEMBERS + 10
        await asyncio.to_thread(survivor.publish, "room", "hello", None)
        for rt in again[:5] + watchers:
            while (frame := await rt.next_event(5))["action"] != "message":
                pass
            assert frame["name"] == "hello"
        for rt in watchers + survivors + again:
            await rt.close()
        print(f"\n{how}: {MEMBERS} leaves reached every watcher after {elapsed:.1f} s")
