"""Helpers to drive the consumer in-process with Channels' WebsocketCommunicator."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from django_pulse import pulse
from tests.asgi import application


class Client:
    """One in-process WebSocket connection to the Pulse consumer."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.comm = communicator
        self.connected: dict[str, Any] = {}
        self._ref = 0
        self._early: list[dict[str, Any]] = []  # event frames that arrived while waiting for a reply

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.comm.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 2) -> dict[str, Any]:
        """The next frame; skips pings."""
        if self._early:
            return self._early.pop(0)
        while True:
            output = await self.comm.receive_output(timeout)
            assert output["type"] == "websocket.send", output
            frame: dict[str, Any] = json.loads(output["text"])
            if frame["action"] != "ping":
                return frame

    async def closed(self, timeout: float = 2) -> int:
        """Wait for the server's close (skipping frames before it); returns its code."""
        while True:
            output = await self.comm.receive_output(timeout)
            if output["type"] == "websocket.close":
                return int(output["code"])

    async def request(self, action: str, **members: Any) -> dict[str, Any]:
        self._ref += 1
        await self.send({"action": action, "ref": self._ref, **members})
        early = self._early
        self._early = []
        try:
            while True:
                frame = await self.recv()
                if frame["action"] in ("ok", "error") and "ref" in frame:
                    assert frame["ref"] == self._ref, frame
                    return frame
                early.append(frame)
        finally:
            self._early = early + self._early

    async def nothing(self, timeout: float = 0.2) -> bool:
        return not self._early and await self.comm.receive_nothing(timeout)

    async def close(self) -> None:
        await self.comm.disconnect()


async def open_client(path: str = "/pulse/ws/", headers: list[tuple[bytes, bytes]] | None = None) -> Client:
    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await comm.connect()
    assert connected
    return Client(comm)


ALL_CAPABILITIES = {"*": ["*"]}
"""What test clients are granted unless a test says otherwise: publishing is no longer a default (least privilege)."""


async def token(client_id: str = "alice", **kwargs: Any) -> str:
    kwargs.setdefault("capabilities", ALL_CAPABILITIES)
    result: dict[str, Any] = await sync_to_async(pulse.get_token)(client_id, **kwargs)
    return str(result["token"])


async def connect(client_id: str = "alice", **kwargs: Any) -> Client:
    """An authenticated client (``kwargs`` go to ``pulse.get_token``)."""
    client = await open_client()
    await client.send({"action": "auth", "token": await token(client_id, **kwargs)})
    frame = await client.recv()
    assert frame["action"] == "connected", frame
    client.connected = frame
    return client


async def next_presence(client: Client, timeout: float = 3) -> dict[str, Any]:
    """The client's next presence event (other frames before it are dropped)."""
    while True:
        frame = await client.recv(timeout)
        if frame["action"] == "presence":
            return frame


async def messages(client: Client, count: int) -> list[dict[str, Any]]:
    """The client's next ``count`` frames, which must be messages."""
    frames = [await client.recv(timeout=5) for _ in range(count)]
    assert all(f["action"] == "message" for f in frames), frames
    return frames


async def seen_then_gone(channel: str = "posts", count: int = 3) -> tuple[int, str]:
    """A client that subscribed, received ``count`` messages and went away: its (last serial, epoch)."""
    alice = await connect("alice")
    reply = await alice.request("subscribe", channel=channel)
    for i in range(count):
        await pulse.apublish(channel, "e", {"i": i})
    frames = await messages(alice, count)
    await alice.close()
    return frames[-1]["serial"], reply["epoch"]
