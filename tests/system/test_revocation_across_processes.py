"""Revocation across processes: ``pulse.disconnect`` closes a client's connections on every server within 1 s."""

from __future__ import annotations

import asyncio
import time

import pytest

from django_pulse import pulse
from django_pulse.clients.websocket import Realtime
from django_pulse.protocol import CloseCode
from tests.support.servers import LiveServer, live_pair

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


async def connect(server: LiveServer, client_id: str) -> Realtime:
    token = await asyncio.to_thread(server.token, client_id)
    client = await Realtime.connect(token["endpoint"], token["token"])
    await client.subscribe("posts")
    return client


async def test_disconnect_reaches_every_process_within_a_second(pulse_redis: str, redis_prefix: str) -> None:
    with live_pair(redis_url=pulse_redis, redis_prefix=redis_prefix) as (a, b):
        alice_a, alice_b, bob_b = await connect(a, "alice"), await connect(b, "alice"), await connect(b, "bob")
        started = time.monotonic()
        await pulse.adisconnect("alice")  # from this process, through Redis: no server is asked directly
        codes = await asyncio.wait_for(asyncio.gather(alice_a.wait_closed(), alice_b.wait_closed()), timeout=5)
        elapsed = time.monotonic() - started
        assert codes == [CloseCode.REVOKED, CloseCode.REVOKED]
        assert elapsed < 1.0, f"revocation took {elapsed:.2f} s"
        # Bob, on the same process as one of Alice's connections, is untouched and still receives.
        await asyncio.to_thread(b.publish, "posts", "still_here", {"n": 1})
        event = await bob_b.next_event(timeout=5)
        assert (event["action"], event["name"]) == ("message", "still_here")
        await bob_b.close()
