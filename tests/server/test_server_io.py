"""The direct-write fast path (django_pulse.server._io): the frames it writes are the servers' own, byte
for byte, and real daphne and uvicorn processes deliver every frame intact and in order through it, including
while the kernel refuses bytes, and keep the ASGI path where it cannot apply (permessage-deflate). Each live
test checks, through the server process's report (``LiveServer.fast_path()``), that the frames really went the
way it says. The servers' internals themselves: tests/server/test_server_contract.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from typing import Any

import pytest

from django_pulse.server._io import FastPathReport, buffer_probe, direct_writer
from django_pulse.server._io.contract import text_frame
from tests.support.rawws import RawWebSocket
from tests.support.servers import live_server

pytestmark = pytest.mark.server_internals


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_is_the_frame_autobahn_and_websockets_send(size: int) -> None:
    from autobahn.twisted.websocket import WebSocketServerFactory
    from websockets.frames import Frame, Opcode

    payload = ("é" * size).encode()[:size]
    assert text_frame(payload) == WebSocketServerFactory().prepareMessage(payload).payloadHybi
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def daphne_send(protocol: Any) -> Any:
    from daphne.server import Server

    return functools.partial(object.__new__(Server).handle_reply, protocol)


def test_buffer_probe_recognises_only_daphne() -> None:
    async def plain(message: dict[str, Any]) -> None:
        return None

    assert buffer_probe(plain) is None
    assert buffer_probe(functools.partial(plain)) is None

    class Transport:
        dataBuffer = b"x" * 100
        offset = 30
        _tempDataLen = 5

    class Protocol:
        transport = Transport()

    probe = buffer_probe(daphne_send(Protocol()))
    assert probe is not None and probe() == 75

    class Gone:
        transport = None

    gone = buffer_probe(daphne_send(Gone()))
    assert gone is not None and gone() == 0


def test_direct_writer_is_only_for_servers_it_knows() -> None:
    async def plain(message: dict[str, Any]) -> None:
        return None

    report = FastPathReport()
    assert direct_writer(plain, report) is None
    assert report.as_dict() == {}

    class NotAutobahn:  # daphne's send, but a protocol whose internals are not the expected ones
        transport = object()
        state = 1

    assert direct_writer(daphne_send(NotAutobahn()), report) is None
    assert (report.as_dict()["daphne"]["path"], report.as_dict()["daphne"]["drift"]) == ("asgi", True)


async def read_until(ws: RawWebSocket, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while len(frames) < count:
        frames.append(await asyncio.wait_for(ws.recv_json(), timeout))
    return frames


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "asgi"])
async def test_a_reader_that_stalls_gets_every_frame_intact_and_in_order(server_name: str, direct: bool) -> None:
    """Frames of 10 B to 150 KB (one-, two- and eight-byte lengths) while the client reads nothing and has a
    4 KB receive buffer: once the kernel's buffers are full it takes part of a frame or nothing (partial sends,
    EAGAIN) and Twisted buffers the rest; when the client reads again every message and every reply arrives
    whole, each kind in order."""
    limits = {"MAX_MESSAGE_SIZE": 200_000, "OUTBOUND_BUFFER_LIMIT": 16 * 1024 * 1024, "HISTORY_SIZE": 0}
    with live_server(server=server_name, pulse={"DIRECT_WRITE": direct, **limits}) as server:
        ws = await RawWebSocket.subscriber(server, "stalled", "stall", rcvbuf=4096)
        ws.writer.transport.pause_reading()
        sizes = [10, 300, 60_000, 150_000] * 24  # 96 messages, 5 MB: more than the kernel's buffers take
        for i, size in enumerate(sizes, start=1):
            await asyncio.to_thread(server.publish, "stall", "blob", {"i": i, "pad": "é" * (size // 2)})
            ws.send_json({"action": "history", "channel": "stall", "ref": i})
        await asyncio.sleep(0.5)
        ws.writer.transport.resume_reading()
        frames = await read_until(ws, 2 * len(sizes))
        messages = [f for f in frames if f["action"] == "message"]
        replies = [f for f in frames if f["action"] in ("ok", "error")]
        assert [m["data"]["i"] for m in messages] == list(range(1, len(sizes) + 1))
        assert [m["serial"] for m in messages] == list(range(messages[0]["serial"], messages[0]["serial"] + len(sizes)))
        assert all(m["data"]["pad"] == "é" * (size // 2) for m, size in zip(messages, sizes, strict=True))
        assert [r["ref"] for r in replies] == list(range(1, len(sizes) + 1))
        await ws.close()
        report = await asyncio.to_thread(server.fast_path)
    if direct:  # some frames written directly (the first, while the kernel took them), the rest behind Twisted's
        assert report[server_name]["path"] == "direct" and report[server_name]["directFrames"] > 0, report
    else:  # DIRECT_WRITE off: the fast path is never even considered
        assert report == {}, report


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
async def test_many_subscribers_get_the_same_frames_through_the_fast_path(server_name: str) -> None:
    """One frame built once, written to 50 sockets: every one receives every message, in publish order, and the
    server wrote every one of those 1,000 frames directly."""
    with live_server(server=server_name, pulse={"HISTORY_SIZE": 0}) as server:
        clients = [await RawWebSocket.subscriber(server, f"sub{i}", "many") for i in range(50)]
        for i in range(20):
            await asyncio.to_thread(server.publish, "many", "tick", {"i": i, "text": "ü" * i})
        for ws in clients:
            frames = await read_until(ws, 20)
            assert [(f["data"]["i"], f["data"]["text"]) for f in frames] == [(i, "ü" * i) for i in range(20)]
            assert len({json.dumps(f["serial"]) for f in frames}) == 20
            ws.abort()
        report = await asyncio.to_thread(server.fast_path)
    entry = report[server_name]
    assert (entry["path"], entry["connections"]) == ("direct", 50), entry
    # 50 x 20 messages, plus each connection's own replies (connected, ok), which take the same path.
    assert entry["directFrames"] >= 50 * 20, entry


@pytest.mark.processes
@pytest.mark.slow
async def test_a_compressed_connection_keeps_the_asgi_path_under_uvicorn() -> None:
    """A client that negotiates permessage-deflate (browsers do) gets frames compressed by uvicorn, beside a
    client without it on the fast path, on the same channel: the frames written directly are the plain
    client's, and only those."""
    from websockets.asyncio.client import connect

    with live_server(server="uvicorn", pulse={"HISTORY_SIZE": 0}) as server:
        clients = {}
        received = dict.fromkeys(("deflate", None), 0)
        for compression in ("deflate", None):
            ws = await connect(server.ws_url, compression=compression, max_size=None)
            token = await asyncio.to_thread(server.token, f"c-{compression}")
            await ws.send(json.dumps({"action": "auth", "token": token["token"]}))
            assert json.loads(await ws.recv())["action"] == "connected"
            await ws.send(json.dumps({"action": "subscribe", "channel": "z", "ref": 1}))
            assert json.loads(await ws.recv())["action"] == "ok"
            assert bool(ws.protocol.extensions) is (compression == "deflate")
            received[compression] += 2
            clients[compression] = ws
        text = "compressible " * 2000
        for i in range(10):
            await asyncio.to_thread(server.publish, "z", "e", {"i": i, "text": text})
        for compression, ws in clients.items():
            got = []
            while len(got) < 10:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                received[compression] += 1
                if frame["action"] == "message":
                    got.append(frame["data"])
            assert got == [{"i": i, "text": text} for i in range(10)]
        report = await asyncio.to_thread(server.fast_path)
        for ws in clients.values():
            await ws.close()
    assert report["uvicorn"]["directFrames"] == received[None], (report, received)


# -- SSE: the response fast path (_io.response_writer) ------------------------------------------------------


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "asgi"])
async def test_sse_streams_get_every_event_intact_and_in_order_while_one_stalls(server_name: str, direct: bool) -> None:
    """Three SDK streams on one channel, one of which stops reading (its kernel buffers fill: partial sends and
    Twisted's buffer under daphne, uvicorn's flow control): events of 10 B to 150 KB arrive whole, in order,
    the same on every stream, once the stalled one reads again; the server's report says which path wrote them
    (and DIRECT_WRITE off never considers the fast path)."""
    from tests.support.sseclient import sdk_stream

    limits = {"MAX_MESSAGE_SIZE": 200_000, "OUTBOUND_BUFFER_LIMIT": 16 * 1024 * 1024, "HISTORY_SIZE": 0}
    with live_server(server=server_name, pulse={"DIRECT_WRITE": direct, **limits}) as server:
        streams = []
        async with contextlib.AsyncExitStack() as stack:
            for i in range(3):
                token = (await asyncio.to_thread(server.token, f"sse{i}"))["token"]
                stream = await stack.enter_async_context(sdk_stream(server.port, token))
                assert (await stream.events.next_frame())["action"] == "connected"
                assert (await stream.request({"action": "subscribe", "channel": "sse"}))["action"] == "ok"
                streams.append(stream)
            stalled = streams[0].events.writer.transport
            stalled.pause_reading()
            sizes = [10, 300, 60_000, 150_000] * 12  # 2.5 MB per stream
            for i, size in enumerate(sizes, start=1):
                await asyncio.to_thread(server.publish, "sse", "blob", {"i": i, "pad": "é" * (size // 2)})
            await asyncio.sleep(0.5)
            stalled.resume_reading()
            received = []
            for stream in streams:
                frames = await stream.events.frames_until(lambda f: f.get("data", {}).get("i") == len(sizes), 60)
                messages = [f for f in frames if f["action"] == "message"]
                assert [m["data"]["i"] for m in messages] == list(range(1, len(sizes) + 1))
                assert all(m["data"]["pad"] == "é" * (size // 2) for m, size in zip(messages, sizes, strict=True))
                received.append(messages)
            assert received[0] == received[1] == received[2]
        report = await asyncio.to_thread(server.fast_path)
    if direct:
        entry = report[f"{server_name}-sse"]
        assert (entry["path"], entry["drift"], entry["connections"]) == ("direct", False, 3), report
        assert entry["directFrames"] >= 2 * len(sizes), report  # at least the two streams that kept reading
    else:
        assert f"{server_name}-sse" not in report, report
