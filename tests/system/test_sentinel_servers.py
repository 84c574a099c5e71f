"""Two real server processes on a Sentinel-managed Redis; the master is killed (kill -9) while one process
publishes through its HTTP endpoint and a WebSocket client listens on the other (docs/scaling.md).

What the user sees: each publish either answers 200 (and the message is delivered live or kept in the
channel's history) or 503; the listener gets a ``discontinuity`` and then live messages again; neither server
process is restarted."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from tests.support.rawws import RawWebSocket
from tests.support.redis_topology import sentinel_group
from tests.support.servers import LiveServer, live_pair

pytestmark = pytest.mark.slow  # two server processes and a Sentinel group


def _publisher(server: LiveServer, results: list[tuple[str, bool]], stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        message_id = f"m{n}"
        try:
            server.publish("orders", "e", {"n": n}, id=message_id)
        except Exception:
            results.append((message_id, False))
        else:
            results.append((message_id, True))
        n += 1
        time.sleep(0.02)


async def _listen(ws: RawWebSocket, frames: list[dict[str, Any]]) -> None:
    with contextlib.suppress(asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
        while True:
            frames.append(await ws.recv_json())


async def test_kill_9_of_the_master_under_two_live_processes() -> None:
    with sentinel_group(replicas=2) as group:
        pulse = {
            "REDIS_SENTINEL": {"service": group.service, "sentinels": group.sentinel_addresses},
            "REDIS_PREFIX": "live-sentinel",
            "REDIS_WAIT_REPLICAS": 1,
            "REDIS_WAIT_TIMEOUT": 0.5,
            "HISTORY_SIZE": 10_000,
        }
        with live_pair(pulse=pulse) as (listener_side, publisher_side):
            ws = await RawWebSocket.subscriber(listener_side, "listener", "orders")
            frames: list[dict[str, Any]] = []
            listening = asyncio.ensure_future(_listen(ws, frames))
            results: list[tuple[str, bool]] = []
            stop = threading.Event()
            thread = threading.Thread(target=_publisher, args=(publisher_side, results, stop), daemon=True)
            thread.start()
            try:
                while sum(ok for _id, ok in results) < 20:
                    await asyncio.sleep(0.05)
                old = group.master_address()
                group.node(old).kill()
                switch_seconds = await asyncio.to_thread(group.wait_for_new_master, old)
                mark = len(results)

                def carried_on() -> bool:
                    # At least 20 publishes succeeded after the switch, the listener had its discontinuity, and
                    # one of those publishes then reached it live. The publisher keeps going until then: the
                    # listener's process may re-subscribe after the first 20 (its reconnect backs off).
                    notices = [n for n, f in enumerate(frames) if f["action"] == "discontinuity"]
                    ok_after = {i for i, ok in results[mark:] if ok}
                    return (
                        len(ok_after) >= 20
                        and bool(notices)
                        and any(f.get("id") in ok_after for f in frames[notices[-1] + 1 :])
                    )

                deadline = time.monotonic() + 40
                while not carried_on():
                    assert time.monotonic() < deadline, (results[mark:], frames[-5:])
                    await asyncio.sleep(0.1)
            finally:
                stop.set()
                await asyncio.to_thread(thread.join, 10)
                await asyncio.sleep(0.5)  # the last publishes arrive
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listening  # it may be inside recv(): the close below reads the same stream
                await ws.close()

            # Every publish that answered 200 is delivered live or retained; the listener's live messages
            # only grow in serial between discontinuities.
            live_ids = {f["id"] for f in frames if f["action"] == "message"}
            reader = await RawWebSocket.subscriber(listener_side, "reader", "history-probe")
            reader.send_json({"action": "history", "channel": "orders", "ref": 9, "limit": 1000})
            reply = await asyncio.wait_for(reader.recv_json(), 10)
            await reader.close()
            assert reply["action"] == "ok", reply
            retained = {m["id"] for m in reply["messages"]}
            succeeded = {i for i, ok in results if ok}
            assert succeeded <= live_ids | retained, sorted(succeeded - live_ids - retained)
            stretch: list[int] = []
            for frame in frames:
                if frame["action"] == "discontinuity":
                    stretch = []
                elif frame["action"] == "message":
                    assert not stretch or frame["serial"] > stretch[-1], frames
                    stretch.append(frame["serial"])
            failed = sum(1 for _i, ok in results if not ok)
            print(
                f"live failover: new master after {switch_seconds:.2f} s; {failed} of {len(results)} publishes "
                f"answered 503; discontinuities {[f['reason'] for f in frames if f['action'] == 'discontinuity']}"
            )
