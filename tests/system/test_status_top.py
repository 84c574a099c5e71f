"""Operating django-pulse: ``pulse status`` and ``pulse top`` against real server processes.

Idle server processes used to register in Redis only at their first WebSocket connection, so ``pulse status``
said ``processes: 0`` with servers up. They now register when their server's loop starts.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from django_pulse.clients.websocket import Realtime
from tests.support.servers import LiveServer, live_pair, live_server, pulse_cmd, until

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def status(server: LiveServer) -> dict[str, Any]:
    done = pulse_cmd(server, "status", "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def child_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@pytest.mark.timeout(300)
def test_status_counts_idle_daphne_processes(redis_url: str, redis_prefix: str) -> None:
    # A long PRESENCE_GRACE: the stopped process stays listed as draining while the commands run.
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix, pulse={"PRESENCE_GRACE": 120}) as (a, b):
        info = until(lambda: status(a), lambda i: i["processes"] == 2, timeout=15.0)
        assert info["processes"] == 2 and info["connections"] == 0
        assert sorted(p["pid"] for p in info["processList"]) == sorted([a.proc.pid, b.proc.pid])
        table = pulse_cmd(b, "status")
        assert "processes:   2" in table.stdout and "connections: 0" in table.stdout
        asyncio.run(watch_with_top(a, b))
        # A process stopped gracefully leaves the count at once (draining: it hands its presence over).
        b.stop()
        info = status(a)
        assert info["processes"] == 1 and info["processList"][0]["pid"] == a.proc.pid
        assert info["draining"] == 1
        assert "(1 draining)" in pulse_cmd(a, "status").stdout


async def watch_with_top(a: LiveServer, b: LiveServer) -> None:
    """``pulse top`` (bounded by --iterations) shows both processes, their connections and the channels."""
    clients = []
    for server, name in ((a, "ann"), (b, "bob"), (b, "cyd")):
        token = await asyncio.to_thread(server.token, name)
        rt = await Realtime.connect(server.ws_url, token["token"])
        await rt.subscribe("posts" if name != "cyd" else "news")
        clients.append(rt)
    try:
        # Counts are what each process reported at its last heartbeat (PROCESS_HEARTBEAT = 3 s).
        await asyncio.to_thread(until, lambda: status(a), lambda i: i["connections"] == 3)
        done = await asyncio.to_thread(pulse_cmd, a, "top", "--iterations", "2", "--interval", "0.5")
        assert done.returncode == 0, done.stderr
        frames = done.stdout.split("pulse top ")[1:]
        assert len(frames) == 2
        for frame in frames:
            assert "processes 2   connections 3   channels 2" in frame
            rows = {line.split()[0]: line.split() for line in frame.splitlines() if line.strip()}
            assert rows[f"{socket.gethostname()}:{a.proc.pid}"][1] == "1"
            assert rows[f"{socket.gethostname()}:{b.proc.pid}"][1] == "2"
            assert rows["posts"][1:] == ["2", "0"] and rows["news"][1:] == ["1", "0"]
            assert "\x1b[2J" not in frame  # not a terminal: frames follow each other
        assert rows[f"{socket.gethostname()}:{b.proc.pid}"][2] == "+0"  # the second frame shows the change
        lines = await asyncio.to_thread(pulse_cmd, a, "top", "--iterations", "2", "--interval", "0.2", "--json")
        parsed = [json.loads(line) for line in lines.stdout.splitlines()]
        assert [p["status"]["connections"] for p in parsed] == [3, 3]
        assert [c["name"] for c in parsed[0]["channels"]] == ["posts", "news"]
    finally:
        for rt in clients:
            await rt.close()


@pytest.mark.parametrize(
    ("server", "app", "args"),
    [("granian", "tests.asgi:application", []), ("uvicorn", "tests.asgi_lifespan:application", ["--lifespan", "on"])],
)
def test_status_counts_idle_granian_and_uvicorn_processes(
    redis_url: str, redis_prefix: str, server: str, app: str, args: list[str]
) -> None:
    with live_server(server=server, app=app, server_args=args, redis_url=redis_url, redis_prefix=redis_prefix) as live:
        info = until(lambda: status(live), lambda i: i["processes"] == 1, timeout=15.0)
        assert info["processes"] == 1 and info["connections"] == 0
        # granian serves from a worker process it forks; uvicorn serves in the process it runs as.
        assert info["processList"][0]["pid"] in (live.proc.pid, *child_pids(live.proc.pid))


@pytest.mark.timeout(300)
def test_graceful_shutdown_hands_presence_over(redis_url: str, redis_prefix: str) -> None:
    """SIGTERM on a process: its clients' members neither leave nor re-enter when the client continues its
    connection on the other process; a member whose client does not come back leaves after PRESENCE_GRACE."""
    grace = 3.0
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix, pulse={"PRESENCE_GRACE": grace}) as (a, b):
        asyncio.run(hand_over(a, b, grace))


async def hand_over(a: LiveServer, b: LiveServer, grace: float) -> None:
    observer = await Realtime.connect(a.ws_url, (await asyncio.to_thread(a.token, "observer"))["token"])
    await observer.request("presence.subscribe", channel="room")
    back_token = (await asyncio.to_thread(b.token, "comes_back"))["token"]
    back = await Realtime.connect(b.ws_url, back_token)
    gone = await Realtime.connect(b.ws_url, (await asyncio.to_thread(b.token, "does_not"))["token"])
    for rt in (back, gone):
        await rt.request("presence.enter", channel="room", data={"who": rt.client_id})
    events: list[tuple[str, str]] = []
    for _ in range(2):
        frame = await observer.next_event(timeout=10)
        events.append((frame["event"], frame["member"]["clientId"]))
    assert sorted(events) == [("enter", "comes_back"), ("enter", "does_not")]
    stopped = time.monotonic()
    await asyncio.to_thread(b.stop)  # SIGTERM: 1001 to both clients, presence handed over
    assert await back.wait_closed() == 1001 and await gone.wait_closed() == 1001
    again = await Realtime.connect(a.ws_url, back_token, recover=back)
    assert again.connected.get("recovered") is True
    members = await observer.request("presence.get", channel="room")
    assert sorted(m["clientId"] for m in members["members"]) == ["comes_back", "does_not"]
    # The one that did not come back leaves once the draining process's key expires (PRESENCE_GRACE) and a
    # live process sweeps (every PROCESS_HEARTBEAT s); the one that continued never left.
    frame = await observer.next_event(timeout=grace + 10)
    waited = time.monotonic() - stopped
    assert (frame["event"], frame["member"]["clientId"]) == ("leave", "does_not")
    assert grace <= waited <= grace + 3.0 + 5.0, waited  # from the SIGTERM: grace, then the next sweep
    members = await observer.request("presence.get", channel="room")
    assert [m["clientId"] for m in members["members"]] == ["comes_back"]
    with pytest.raises(TimeoutError):
        await observer.next_event(timeout=1)  # no leave, no enter for the member that was handed over
    await again.close()
    await observer.close()
