"""The Python realtime client through a Redis outage, with no discontinuity handling of its own: a real daphne on
Redis through a TCP proxy, a publisher at 50 messages/s over the HTTP API, Redis cut for 2 s, and the server's
subscriber connection held back 1.5 s when it comes back (publishing works again first, as in a failover), so
the process misses messages live and sends its subscribers a ``discontinuity``.

What a user sees: the client resumes the channel by itself; the loop over its frames gets a ``resumed`` event
and every acknowledged message exactly once and in order, never the ``discontinuity``. A raw WebSocket
subscriber on the same process shows the gap the client's resume filled.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from django_pulse.clients import Realtime
from tests.support.failover import Publishers, check_outage_delivery
from tests.support.rawws import RawWebSocket
from tests.support.servers import live_server
from tests.support.tcpproxy import CuttableProxy

pytestmark = pytest.mark.slow

RATE = 50


async def _collect(rt: Realtime, frames: list[dict[str, Any]]) -> None:
    async for frame in rt:
        frames.append(frame)


async def _witness(ws: RawWebSocket, frames: list[dict[str, Any]]) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            frames.append(await ws.recv_json())


async def test_the_client_resumes_by_itself_after_a_broker_outage(redis_url: str, redis_prefix: str) -> None:
    parts = urlsplit(redis_url)
    with (
        CuttableProxy(parts.port or 6379) as proxy,
        live_server(redis_url=f"redis://127.0.0.1:{proxy.port}{parts.path}", redis_prefix=redis_prefix) as server,
    ):
        token = await asyncio.to_thread(server.token, "reader")
        rt = await Realtime.connect(server.ws_url, token["token"])
        await rt.subscribe("feed")
        witness = await RawWebSocket.subscriber(server, "witness", "feed")
        got: list[dict[str, Any]] = []
        seen: list[dict[str, Any]] = []
        tasks = [asyncio.ensure_future(_collect(rt, got)), asyncio.ensure_future(_witness(witness, seen))]
        publishers = Publishers(server, ["feed"], rate=RATE)
        try:
            await asyncio.sleep(1.0)
            proxy.hold_next(b"SUBSCRIBE", 1.5)
            proxy.cut()
            await asyncio.sleep(2.0)
            proxy.restore()
            await asyncio.sleep(4.0)  # the subscriber connection back, the resume, live again
            publishers.stop()
            acknowledged = publishers.acknowledged["feed"]
            deadline = time.monotonic() + 15
            while not set(acknowledged) <= {f.get("id") for f in got} and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)  # nothing more arrives
        finally:
            publishers.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await rt.close()
            await witness.close()

    assert proxy.held == 1
    messages = [f for f in got if f["action"] == "message"]
    notices = [(f["action"], f.get("reason")) for f in got if f["action"] in ("resumed", "discontinuity")]
    ids, serials = [f["id"] for f in messages], [f["serial"] for f in messages]
    summary = check_outage_delivery(publishers, "feed", seen, ids, serials, f"notices {notices}")
    assert notices == [("resumed", "broker_unavailable")], summary
    resumed = next(f for f in got if f["action"] == "resumed")
    # The replay starts right after the last message the client had before the gap.
    after = messages[[f for f in got if f["action"] in ("message", "resumed")].index(resumed)]
    assert after["serial"] == resumed["serial"] + 1, summary
    print(f"\n{summary}")


async def test_a_gap_older_than_the_history_is_the_discontinuity(redis_url: str, redis_prefix: str) -> None:
    """The same outage with history too short for the gap (5 messages, no minimum age): the client's resume is
    refused, so the loop gets the ``discontinuity`` (reload state), then live messages again."""
    parts = urlsplit(redis_url)
    pulse = {"HISTORY_SIZE": 5, "HISTORY_MIN_RETENTION": 0}
    with (
        CuttableProxy(parts.port or 6379) as proxy,
        live_server(
            redis_url=f"redis://127.0.0.1:{proxy.port}{parts.path}", redis_prefix=redis_prefix, pulse=pulse
        ) as server,
    ):
        token = await asyncio.to_thread(server.token, "reader")
        rt = await Realtime.connect(server.ws_url, token["token"])
        await rt.subscribe("feed")
        await asyncio.to_thread(server.publish, "feed", "e", {"n": 0})
        assert (await rt.next_event(5))["serial"] == 1
        proxy.hold_next(b"SUBSCRIBE", 3.0)
        proxy.cut()
        proxy.restore()
        published = 0
        deadline = time.monotonic() + 2.5
        while published < 20 and time.monotonic() < deadline:  # while the process is deaf
            with contextlib.suppress(AssertionError):  # a 503 while the publish connection comes back
                await asyncio.to_thread(server.publish, "feed", "e", {"n": published + 1})
                published += 1
        assert published == 20
        frame = await rt.next_event(10)
        assert frame == {"action": "discontinuity", "channel": "feed", "reason": "broker_unavailable"}
        assert rt.positions["feed"][0] == 21  # the reply's serial: the channel's position now
        await asyncio.to_thread(server.publish, "feed", "e", {"n": "live"})
        frame = await rt.next_event(5)
        assert (frame["action"], frame["data"], frame["serial"]) == ("message", {"n": "live"}, 22)
        await rt.close()
    assert proxy.held == 1
