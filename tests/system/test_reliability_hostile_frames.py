"""No frame from one client harms another, on a real daphne process with the in-memory broker and with Redis.

Hostile fields (a lone surrogate, raw or escaped; nesting past 64 levels and past the interpreter's recursion
limit; text that is not JSON or not UTF-8) are sent through every entry point: SSE ``send/`` (whose body is
JSON text, so a ``"\\ud800"`` escape there puts a raw surrogate into the frame it carries), WebSocket frames,
and the HTTP API (publish, presence; the API has no whisper). The sender alone gets a 4xx, an ``invalid_json``
error frame, or (for a WebSocket text frame that is not UTF-8) its own close; subscribers of the channel over
WebSocket and SSE (messages and presence) stay connected, receive none of it, and receive what is published
afterwards. Before the one strict decoder, a whisper carrying a raw surrogate through ``send/`` was relayed and
closed every WebSocket subscriber with 4500, and with Redis ``send/`` answered 500.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.support.rawws import RawWebSocket
from tests.support.servers import LiveServer, live_server, pulse_command
from tests.support.sseclient import SDKStream, post_json, sdk_stream

pytestmark = [pytest.mark.slow, pytest.mark.reliability]

CHANNEL = "room"
LONE = "\ud800"


def _deep(levels: int) -> str:
    """A placeholder ``_text`` replaces with ``levels`` nested arrays (json.dumps itself would recurse)."""
    return f"__deep_{levels}__"


def hostile_frames() -> list[dict[str, Any]]:
    """Frames whose fields Pulse cannot carry: each must reach no one but its sender."""
    return [
        {"action": "whisper", "channel": CHANNEL, "name": "typing", "data": LONE},
        {"action": "whisper", "channel": CHANNEL, "name": LONE, "data": {"k": 1}},
        {"action": "publish", "channel": CHANNEL, "name": "e", "data": {LONE: "key"}},
        {"action": "publish", "channel": CHANNEL, "name": "e", "data": ["ok", "a" + LONE]},
        {"action": "presence.enter", "channel": CHANNEL, "data": {"name": LONE}},
        {"action": "presence.update", "channel": CHANNEL, "data": LONE},
        {"action": "publish", "channel": CHANNEL, "name": "deep", "data": _deep(70)},
        {"action": "whisper", "channel": CHANNEL, "name": "deep", "data": _deep(1500)},
    ]


def _text(frame: dict[str, Any], *, raw: bool) -> str:
    """The frame's text: ``raw`` keeps a lone surrogate as the character itself (what a frame decoded from an SSE
    body holds), else it is written as a ``\\ud800`` escape (what a WebSocket can carry)."""
    text = json.dumps(frame, ensure_ascii=not raw)
    for levels in (70, 1500):
        text = text.replace(f'"{_deep(levels)}"', "[" * levels + "]" * levels)
    return text


def _has_lone(frame: dict[str, Any]) -> bool:
    return LONE in json.dumps(frame, ensure_ascii=False)


def enable(server: LiveServer) -> str:
    """``manage.py pulse enable``: the app's API key."""
    return str(json.loads(pulse_command(server, "enable", "--json"))["apiKey"])


def api(server: LiveServer, method: str, path: str, key: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(server.url + path, data=body, method=method)
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


class Subscribers:
    """WebSocket and SSE subscribers of the channel's messages and presence, and what each received."""

    def __init__(self, sockets: list[RawWebSocket], stream: SDKStream, context: Any) -> None:
        self.sockets = sockets
        self.stream = stream
        self.context = context  # the SSE stream's, exited by close()

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()
        await self.context.__aexit__(None, None, None)

    async def until(self, event: str, timeout: float = 10) -> None:
        """Each receives frames until a message named ``event``; none may be an error, a close or a message
        carrying anything the attacker sent (its names are ``typing``/``deep``/``e`` or a surrogate)."""

        async def frames_of_socket(ws: RawWebSocket) -> list[dict[str, Any]]:
            frames: list[dict[str, Any]] = []
            while True:
                opcode, payload = await asyncio.wait_for(ws.recv(), timeout)
                assert opcode == 0x1, f"a subscriber got opcode {opcode} ({payload[:2]!r}): closed by another's frame"
                frame = json.loads(payload)
                if frame["action"] != "ping":
                    frames.append(frame)
                    if frame.get("name") == event:
                        return frames

        async def frames_of_stream() -> list[dict[str, Any]]:
            return await self.stream.events.frames_until(lambda f: f.get("name") == event, timeout)

        received = await asyncio.gather(*(frames_of_socket(ws) for ws in self.sockets), frames_of_stream())
        for frames in received:
            assert frames[-1]["name"] == event and frames[-1]["data"] == {"after": event}, frames[-1]
            for frame in frames[:-1]:
                assert frame["action"] in ("message", "presence", "whisper"), frame
                assert frame.get("name") not in ("typing", "deep", "e"), f"another's hostile frame relayed: {frame}"
                if "attacker" in json.dumps(frame):  # only the attacker's one well-formed whisper reaches others
                    assert (frame["action"], frame["name"], frame["data"]) == ("whisper", "fine", 1), frame


async def open_subscribers(server: LiveServer) -> Subscribers:
    sockets = [await RawWebSocket.subscriber(server, f"sub-{i}", CHANNEL) for i in range(3)]
    for ws in sockets:
        ws.send_json({"action": "presence.subscribe", "channel": CHANNEL, "ref": 1})
        assert (await asyncio.wait_for(ws.recv_json(), 5))["action"] == "ok"
    token = (await asyncio.to_thread(server.token, "sub-sse"))["token"]
    context = sdk_stream(server.port, token)
    stream = await context.__aenter__()
    assert (await stream.events.next_frame())["action"] == "connected"
    assert (await stream.request({"action": "subscribe", "channel": CHANNEL}))["action"] == "ok"
    assert (await stream.request({"action": "presence.subscribe", "channel": CHANNEL}))["action"] == "ok"
    return Subscribers(sockets, stream, context)


async def attacker_stream_sends(server: LiveServer, attacker: SDKStream) -> None:
    """SSE send/: a raw surrogate in a frame is refused with 400 for the whole POST; an escaped one, deep
    nesting and text that is not JSON are error frames on the attacker's own stream."""
    for frame in hostile_frames():
        if _has_lone(frame):
            status, answer = await post_json(
                server.port, "/pulse/sse/send/", {"stream": attacker.stream_id, "frames": [_text(frame, raw=True)]}
            )
            assert (status, answer["error"]["code"]) == (400, "invalid_json"), (frame["action"], status, answer)
        assert await attacker.send(_text(frame, raw=False)) == 202
        reply = await attacker.events.next_frame()
        assert reply is not None and (reply["action"], reply["code"]) == ("error", "invalid_json"), (frame, reply)
    assert await attacker.send("{not json", '"\\ud800"', "[" * 1500) == 202
    for _ in range(3):
        frame = await attacker.events.next_frame()
        assert frame is not None and frame["code"] == "invalid_json", frame
    # A body whose own nesting or text is hostile: 400, never 500.
    for body in (b'{"stream":' + b"[" * 1500 + b"]" * 1500 + b"}", b'{"stream":"\\ud800","frames":[]}', b"\xff"):
        status, answer = await post_json(server.port, "/pulse/sse/send/", body)
        assert (status, answer["error"]["code"]) == (400, "invalid_json"), (body[:20], status, answer)
    assert (await attacker.request({"action": "whisper", "channel": CHANNEL, "name": "fine", "data": 1}))[
        "action"
    ] == "ok"


async def attacker_socket_sends(server: LiveServer) -> None:
    """WebSocket: every hostile frame is an ``invalid_json`` error to the sender, who stays connected; a text
    frame that is not UTF-8 (a surrogate's bytes) closes the sender's connection only."""
    ws = await RawWebSocket.subscriber(server, "attacker-ws", CHANNEL)
    for index, frame in enumerate(hostile_frames()):
        text = _text({**frame, "ref": index}, raw=False)
        if len(text) > 60_000:
            continue  # beyond this client's frame header; the SSE path sends it
        ws.send(0x1, text.encode())
        reply = await asyncio.wait_for(ws.recv_json(), 5)
        # No ref: a frame that is refused as a whole is answered before its members are read.
        assert (reply["action"], reply.get("code")) == ("error", "invalid_json"), (index, reply)
    ws.send(
        0x1,
        json.dumps({"action": "publish", "channel": CHANNEL, "name": "e", "data": "x"}).encode()[:-3]
        + b"\xed\xa0\x80}",
    )
    try:
        while True:
            opcode, payload = await asyncio.wait_for(ws.recv(), 5)
            if opcode == 0x8:
                assert int.from_bytes(payload[:2], "big") == 1007, payload
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # daphne (autobahn) fails such a connection by dropping it: the sender sees 1006
    ws.abort()


def attacker_calls_the_api(server: LiveServer, key: str) -> None:
    for body in (
        '{"channel":"room","event":"e","data":"\\ud800"}',
        '{"channel":"room","event":"\\ud800","data":1}',
        '{"messages":[{"channel":"room","event":"e","data":{"\\udfff":1}}]}',
        '{"channel":"room","event":"e","data":' + "[" * 1500 + "]" * 1500 + "}",
        '{"channel":"room","event":"e","data":' + "[" * 70 + "]" * 70 + "}",
    ):
        status, answer = api(server, "POST", "/pulse/publish/", key, body.encode())
        assert (status, answer["error"]["code"]) == (400, "invalid_json"), (body[:60], status, answer)
    status, answer = api(
        server, "POST", "/pulse/publish/", key, b'{"channel":"room","event":"e","data":"\xed\xa0\x80"}'
    )
    assert (status, answer["error"]["code"]) == (400, "invalid_json"), answer
    for channel in ("%ED%A0%80", "room%0A", "%FF"):
        status, answer = api(server, "GET", f"/pulse/presence/{channel}/", key)
        assert 400 <= status < 500, (channel, status, answer)
    status, answer = api(server, "GET", f"/pulse/presence/{CHANNEL}/", key)
    assert status == 200 and {m["clientId"] for m in answer["members"]} <= {"sub-sse", "attacker-sse"}, answer


@pytest.mark.parametrize("broker", ["memory", "redis"])
async def test_no_frame_from_one_client_harms_another(broker: str, request: pytest.FixtureRequest) -> None:
    options: dict[str, Any] = {}
    if broker == "redis":
        options = {"redis_url": request.getfixturevalue("redis_url")}
        options["redis_prefix"] = request.getfixturevalue("redis_prefix")
    with live_server(**options) as server:
        key = await asyncio.to_thread(enable, server)
        subscribers = await open_subscribers(server)
        try:
            token = (await asyncio.to_thread(server.token, "attacker-sse"))["token"]
            async with sdk_stream(server.port, token) as attacker:
                assert (await attacker.events.next_frame())["action"] == "connected"
                await attacker_stream_sends(server, attacker)
                await asyncio.to_thread(server.publish, CHANNEL, "after-sse", {"after": "after-sse"})
                await subscribers.until("after-sse")

                await attacker_socket_sends(server)
                await asyncio.to_thread(server.publish, CHANNEL, "after-ws", {"after": "after-ws"})
                await subscribers.until("after-ws")

                await asyncio.to_thread(attacker_calls_the_api, server, key)
                status, _ = await asyncio.to_thread(
                    api,
                    server,
                    "POST",
                    "/pulse/publish/",
                    key,
                    b'{"channel":"room","event":"after-api","data":{"after":"after-api"}}',
                )
                assert status == 200
                await subscribers.until("after-api")
            assert "Traceback" not in server.log(), server.log()[-3000:]
        finally:
            await subscribers.close()
