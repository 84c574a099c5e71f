"""Redis faults, on a redis-server of the test's own (never the shared one): paused (SIGSTOP) or restarted
for 5 s while numbered messages are published through two daphne processes' HTTP API. Every subscriber gets
all of them in order, or is told with a ``discontinuity`` frame: zero silent gaps. Publishing while Redis is
down answers 503 unavailable.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from django_pulse.clients.http import PulseAPIError, PulseClient
from django_pulse.clients.websocket import Realtime
from tests.support.servers import ROOT, LiveServer, free_port, live_pair, wait_for_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


@dataclass
class OwnRedis:
    """A redis-server process on a free loopback port, without persistence, owned by one test."""

    port: int
    dir: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=10, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    if not shutil.which(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    redis = OwnRedis(port=free_port(), dir=tempfile.mkdtemp(prefix="pulse-redis-"))
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@dataclass
class Publisher:
    """Publishes numbered messages through the HTTP API, alternating between servers; records each outcome."""

    servers: list[LiveServer]
    api_key: str
    ok: list[tuple[int, str, float]] = field(default_factory=list)  # (number, id, when)
    failed: list[tuple[int, str, float, float]] = field(default_factory=list)  # (number, code, started, ended)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, interval: float) -> None:
        number = 0
        while not self.stop.is_set():
            server = self.servers[number % len(self.servers)]
            started = time.monotonic()
            try:
                message_id = PulseClient(server.url + "/pulse/", self.api_key).publish("numbers", "n", {"n": number})
            except PulseAPIError as exc:
                self.failed.append((number, f"{exc.status} {exc.code}", started, time.monotonic()))
            else:
                self.ok.append((number, message_id, time.monotonic()))
            number += 1
            time.sleep(interval)


def check_no_silent_gap(frames: list[dict[str, Any]], published: dict[str, int]) -> bool:
    """Serials increase by exactly 1 between discontinuity frames; every message that was reported published
    arrived unless a discontinuity frame said messages may be missing. Returns whether one did."""
    told = False
    previous = None
    for frame in frames:
        if frame["action"] == "resumed":
            continue  # the client resumed the channel after a notice: the replay continues the serials
        if frame["action"] == "discontinuity":
            # broker_unavailable: this process was deaf; history_lost: Redis came back empty and the first publish
            # restarted the counter (heard when this process re-subscribed before it).
            assert frame["channel"] == "numbers" and frame["reason"] in ("broker_unavailable", "history_lost"), frame
            told = True
            previous = None
            continue
        assert frame["action"] == "message", frame
        if previous is not None:
            assert frame["serial"] == previous + 1, f"silent gap: serial {previous} then {frame['serial']}"
        previous = frame["serial"]
    if not told:
        received = {frame["id"] for frame in frames}
        missing = set(published) - received
        numbers = sorted(published[m] for m in missing)
        assert not missing, f"published but never delivered, and no discontinuity: {numbers}"
    return told


@pytest.mark.parametrize("fault", ["pause", "restart"])
async def test_redis_down_for_5_s_leaves_no_silent_gap(own_redis: OwnRedis, fault: str) -> None:
    prefix = "pulsefault"
    with live_pair(redis_url=own_redis.url, redis_prefix=prefix) as (first, second):
        subscribers = []
        for server in (first, second):
            for i in range(2):
                token = await asyncio.to_thread(server.token, f"sub{i}")
                client = await Realtime.connect(server.ws_url, token["token"])
                await client.subscribe("numbers")
                subscribers.append(client)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "django", "pulse", "enable", "--json"],
            env=first.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        publisher = Publisher([first, second], json.loads(done.stdout)["apiKey"])
        thread = threading.Thread(target=publisher.run, args=(0.05,), daemon=True)
        thread.start()
        await asyncio.sleep(1.5)
        down_at = time.monotonic()
        if fault == "pause":
            own_redis.pause()
        else:
            own_redis.stop()
        await asyncio.sleep(5)
        up_at = time.monotonic()
        if fault == "pause":
            own_redis.resume()
        else:
            own_redis.start()
        await asyncio.sleep(8)  # the subscriber connections reconnect with backoff (at most 5 s)
        publisher.stop.set()
        await asyncio.to_thread(thread.join, 15)
        # A last message both processes must deliver: everybody is live again.
        final = await asyncio.to_thread(first.publish, "numbers", "end", None)
        published = {message_id: number for number, message_id, _ in publisher.ok}
        published[final] = -1
        told = []
        for client in subscribers:
            frames = []
            while True:
                frame = await client.next_event(20)
                frames.append(frame)
                if frame.get("id") == final:
                    break
            told.append(check_no_silent_gap(frames, published))
        for client in subscribers:
            await client.close()

    # Publishing while Redis was down failed loudly, never silently.
    assert publisher.failed, "no publish failed while Redis was down"
    assert {code for _, code, _, _ in publisher.failed} == {"503 unavailable"}
    assert all(ended >= down_at - 0.5 and started <= up_at + 6 for _, _, started, ended in publisher.failed)
    if fault == "restart":
        # Every subscriber connection to Redis broke: every client was told.
        assert all(told), told
    print(
        f"\n{fault}: {len(publisher.ok)} published, {len(publisher.failed)} refused with 503, "
        f"discontinuity told to {sum(told)}/{len(told)} subscribers"
    )


@pytest.mark.django_db(transaction=True)
async def test_publishing_while_redis_is_down_fails_loudly(own_redis: OwnRedis, settings: Any) -> None:
    from asgiref.sync import sync_to_async

    from django_pulse import pulse
    from django_pulse.exceptions import Unavailable
    from django_pulse.server.runtime import get_runtime
    from tests.support.wsutil import connect

    settings.PULSE = {"REDIS_URL": own_redis.url, "REDIS_PREFIX": "pulsefault"}
    client = await connect("alice")
    try:
        assert await pulse.apublish("posts", "e", 1)
        assert (await client.request("publish", channel="posts", name="e"))["action"] == "ok"
        for fault in ("pause", "stop"):
            own_redis.pause() if fault == "pause" else own_redis.stop()
            started = time.monotonic()
            with pytest.raises(Unavailable) as info:
                await pulse.apublish("posts", "e", 2)
            assert str(own_redis.port) not in str(info.value)
            with pytest.raises(Unavailable):
                await sync_to_async(pulse.publish)("posts", "e", 3)
            # A client's publish over the WebSocket: an error reply, and the connection stays.
            await client.send({"action": "publish", "channel": "posts", "name": "e", "ref": fault})
            while (reply := await client.recv(timeout=8)).get("ref") != fault:
                pass
            assert (reply["action"], reply["code"]) == ("error", "unavailable"), reply
            assert str(own_redis.port) not in reply["message"]  # nothing about the infrastructure
            assert time.monotonic() - started < 15  # three publishes, each bounded by the 3 s socket timeout
            if fault == "pause":
                own_redis.resume()
    finally:
        await client.close()
        await get_runtime().broker.aclose()
