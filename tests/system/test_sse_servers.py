"""The SSE transport against real servers (daphne, uvicorn; two daphne processes on Redis): the SDK stream and
its tickets, client frames over POST (any process), unidirectional streams of signed stream names resuming
with Last-Event-ID, presence, and the limits (docs/transports.md)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from django_pulse.streams import sign_stream
from tests.support.servers import LiveServer, live_pair, live_server
from tests.support.sseclient import SDKStream, open_stream, post_json, sdk_stream

SERVERS = ["daphne", "uvicorn"]

pytestmark = pytest.mark.slow  # real server processes


async def publish(server: LiveServer, channel: str, event: str, data: Any = None) -> str:
    return await asyncio.to_thread(server.publish, channel, event, data)


async def token(server: LiveServer, client_id: str = "tester", **kwargs: Any) -> str:
    return str((await asyncio.to_thread(server.token, client_id, **kwargs))["token"])


async def connected(stream: SDKStream) -> dict[str, Any]:
    frame = await stream.events.next_frame()
    assert frame is not None and frame["action"] == "connected", frame
    return frame


@pytest.mark.parametrize("server_name", SERVERS)
async def test_the_sdk_stream_carries_the_websocket_protocol(server_name: str) -> None:
    with live_server(server=server_name) as server:
        async with sdk_stream(server.port, await token(server, "alice")) as alice:
            headers = alice.events.headers
            assert headers["content-type"].startswith("text/event-stream")
            assert "no-cache" in headers["cache-control"]
            assert headers["x-accel-buffering"] == "no"
            hello = await connected(alice)
            assert hello["clientId"] == "alice" and hello["connectionKey"]
            assert alice.ticket["clientId"] == "alice"

            reply = await alice.request({"action": "subscribe", "channel": "posts"})
            assert reply["action"] == "ok" and reply["serial"] == 0
            ids = [await publish(server, "posts", "new_post", {"i": i}) for i in range(3)]
            frames = await alice.events.frames_until(lambda f: f.get("serial") == 3)
            assert [f["id"] for f in frames] == ids
            assert [f["data"] for f in frames] == [{"i": 0}, {"i": 1}, {"i": 2}]

            own = await alice.request({"action": "publish", "channel": "posts", "name": "hi", "data": "yo"})
            assert own["action"] == "ok" and own["serial"] == 4
            enter = await alice.request({"action": "presence.enter", "channel": "posts", "data": {"n": 1}})
            assert enter["member"]["clientId"] == "alice"
            history = await alice.request({"action": "history", "channel": "posts", "limit": 2})
            assert [m["serial"] for m in history["messages"]] == [3, 4]
            refresh = await alice.request({"action": "auth", "token": await token(server, "alice", ttl=60)})
            assert refresh["action"] == "ok" and refresh["expiresAt"] < hello["expiresAt"]
            # The protocol's rules and codes, unchanged: a bad channel, an unknown action, a bad frame.
            bad = await alice.request({"action": "subscribe", "channel": "no spaces"})
            assert bad["code"] == "invalid_channel"
            assert (await alice.request({"action": "nope"}))["code"] == "unknown_action"
            assert await alice.send("{not json") == 202
            frame = await alice.events.next_frame()
            assert frame is not None and frame["code"] == "invalid_json"
            too_big = json.dumps({"action": "publish", "channel": "posts", "name": "x", "data": "y" * 70_000})
            assert await alice.send(too_big) == 202
            frame = await alice.events.next_frame()
            assert frame is not None and frame["code"] == "message_too_large"

            assert await alice.send(close=1000) == 202
            assert await alice.events.next_frame() == {"action": "close", "code": 1000, "reason": "normal"}
            assert await alice.events.next_frame() is None  # the response ended
            # The stream is gone (once its clean-up ran): frames for it are refused.
            for _ in range(50):
                if await alice.send({"action": "pong"}) == 404:
                    break
                await asyncio.sleep(0.05)
            assert await alice.send({"action": "pong"}) == 404


async def test_tickets_are_single_use_short_lived_and_need_a_valid_token() -> None:
    with live_server(pulse={"SSE_TICKET_TTL": 1}) as server:
        status, ticket = await post_json(server.port, "/pulse/sse/ticket/", {"token": await token(server)})
        assert status == 200 and set(ticket) >= {"ticket", "stream", "expiresIn"}
        path = f"/pulse/sse/?ticket={ticket['ticket']}"
        async with open_stream(server.port, path) as first:
            assert first.status == 200
            async with open_stream(server.port, path) as again:
                assert again.status == 401
                assert json.loads(again.body)["error"]["code"] == "token_invalid"
        status, late = await post_json(server.port, "/pulse/sse/ticket/", {"token": await token(server)})
        await asyncio.sleep(1.5)
        async with open_stream(server.port, f"/pulse/sse/?ticket={late['ticket']}") as expired:
            assert expired.status == 401

        forged = (await token(server))[:-4] + "AAAA"
        status, answer = await post_json(server.port, "/pulse/sse/ticket/", {"token": forged})
        assert status == 401 and answer["error"]["code"] == "token_invalid"
        status, answer = await post_json(server.port, "/pulse/sse/ticket/", {"nope": 1})
        assert status == 400 and answer["error"]["code"] == "bad_request"
        status, answer = await post_json(server.port, "/pulse/sse/send/", {"stream": "x" * 32, "frames": []})
        assert status == 404 and answer["error"]["code"] == "stream_unknown"
        status, answer = await post_json(server.port, "/pulse/sse/send/", b"x" * 300_000)
        assert status == 413
        status, answer = await post_json(server.port, "/pulse/sse/send/", {"stream": 1, "frames": "no"})
        assert status == 400


async def test_a_token_expiring_on_a_stream_ends_it_with_4002() -> None:
    with live_server(pulse={"TOKEN_LEEWAY": 0}) as server:
        # 3 s: a 1 s token expired before a loaded CI machine had even connected the stream.
        async with sdk_stream(server.port, await token(server, ttl=3)) as stream:
            await connected(stream)
            assert await stream.events.next_frame(15) == {"action": "close", "code": 4002, "reason": "token_expired"}
            assert await stream.events.next_frame() is None


async def test_an_origin_that_is_not_allowed_is_refused() -> None:
    with live_server(pulse={"ALLOWED_ORIGINS": ["http://good.example"]}) as server:
        body = {"token": await token(server)}
        status, _ = await post_json(server.port, "/pulse/sse/ticket/", body, {"Origin": "http://evil.example"})
        assert status == 403
        status, _ = await post_json(server.port, "/pulse/sse/ticket/", body, {"Origin": "http://good.example"})
        assert status == 200


@pytest.mark.parametrize("server_name", SERVERS)
async def test_unidirectional_stream_names_events_and_resumes_with_last_event_id(server_name: str) -> None:
    with live_server(server=server_name, pulse={"HEARTBEAT_INTERVAL": 0.5}) as server:
        streams = "&".join(f"stream={sign_stream(c)}" for c in ("feed", "alerts"))
        path = f"/pulse/sse/?{streams}"
        async with open_stream(server.port, path) as listener:
            assert listener.status == 200
            await asyncio.sleep(0.3)
            await publish(server, "feed", "new_post", "<li>one</li>")
            await publish(server, "alerts", "alert", {"level": 2})
            first = await listener.next_event()
            second = await listener.next_event()
            assert first is not None and second is not None
            assert (first["event"], first["data"]) == ("new_post", "<li>one</li>")  # sse-swap="new_post"
            assert (second["event"], json.loads(second["data"])) == ("alert", {"level": 2})
            last_id = second["id"]
            await asyncio.sleep(0.7)
            assert "ping" in listener.comments  # heartbeat comments
        # Missed while away: 3 on feed, 1 on alerts.
        for i in range(3):
            await publish(server, "feed", "new_post", f"<li>missed {i}</li>")
        await publish(server, "alerts", "alert", "missed alert")
        async with open_stream(server.port, path, {"Last-Event-ID": last_id}) as again:
            got = [await again.next_event() for _ in range(4)]
            assert sorted(e["data"] for e in got if e) == sorted(
                ["<li>missed 0</li>", "<li>missed 1</li>", "<li>missed 2</li>", "missed alert"]
            )
            assert [e["data"] for e in got if e and e["event"] == "new_post"] == [
                f"<li>missed {i}</li>" for i in range(3)
            ]
            await publish(server, "feed", "new_post", "<li>live</li>")
            live = await again.next_event()
            assert live is not None and live["data"] == "<li>live</li>"
            with pytest.raises(asyncio.TimeoutError):
                await again.next_event(0.5)  # nothing twice
        # Without Last-Event-ID a new listener starts at the present: nothing replayed.
        async with open_stream(server.port, path) as fresh:
            with pytest.raises(asyncio.TimeoutError):
                await fresh.next_event(0.5)


async def test_unidirectional_streams_refuse_forged_and_foreign_names() -> None:
    with live_server() as server:
        good = sign_stream("feed")
        async with open_stream(server.port, f"/pulse/sse/?stream={good[:-2]}xx") as forged:
            assert forged.status == 403
        bound = sign_stream("feed", client_id="7")
        async with open_stream(server.port, f"/pulse/sse/?stream={bound}") as anonymous:
            assert anonymous.status == 403
        async with open_stream(server.port, "/pulse/sse/") as bare:
            assert bare.status == 400


async def test_presence_of_an_sse_client_leaves_at_once_on_close_and_after_the_grace_on_a_drop() -> None:
    with live_server(pulse={"PRESENCE_GRACE": 3}) as server:
        async with sdk_stream(server.port, await token(server, "watcher")) as watcher:
            await connected(watcher)
            await watcher.request({"action": "presence.subscribe", "channel": "room"})
            async with sdk_stream(server.port, await token(server, "leaver")) as leaver:
                await connected(leaver)
                await leaver.request({"action": "presence.enter", "channel": "room", "data": 1})
                await watcher.events.frames_until(lambda f: f.get("event") == "enter")
                assert await leaver.send(close=1000) == 202
                started = time.monotonic()
                await watcher.events.frames_until(lambda f: f.get("event") == "leave")
                assert time.monotonic() - started < 2
            async with sdk_stream(server.port, await token(server, "dropper")) as dropper:
                await connected(dropper)
                await dropper.request({"action": "presence.enter", "channel": "room", "data": 2})
                await watcher.events.frames_until(lambda f: f.get("event") == "enter")
            started = time.monotonic()  # the dropper's TCP connection ended without a close
            leave = await watcher.events.frames_until(lambda f: f.get("event") == "leave")
            assert leave[-1]["member"]["clientId"] == "dropper"
            assert time.monotonic() - started > 2


@pytest.mark.redis
async def test_frames_posted_to_any_process_reach_the_stream_on_another(redis_url: str, redis_prefix: str) -> None:
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (a, b):
        # The ticket from A, the stream held by B, frames POSTed to A: routed to B through Redis.
        async with sdk_stream(a.port, await token(a, "alice"), stream_port=b.port) as alice:
            await connected(alice)
            reply = await alice.request({"action": "subscribe", "channel": "x"}, port=a.port)
            assert reply["action"] == "ok"
            own = await alice.request({"action": "publish", "channel": "x", "name": "n", "data": 1}, port=a.port)
            assert own["serial"] == 1
            await publish(a, "x", "n", 2)
            frames = await alice.events.frames_until(lambda f: f.get("serial") == 2)
            assert [f["data"] for f in frames if f["action"] == "message"] == [1, 2]
            # Recover on the other process: the same connection id, subscriptions resumed by the client.
            key = (await alice.request({"action": "presence.enter", "channel": "x", "data": 0}, port=b.port))["member"]
            assert key["clientId"] == "alice"


async def test_a_stream_whose_client_stops_reading_is_cut_as_a_slow_consumer() -> None:
    with live_server(pulse={"OUTBOUND_BUFFER_LIMIT": 128 * 1024}, extra_env={"PULSE_LIVE_LOGLEVEL": "INFO"}) as server:
        async with sdk_stream(server.port, await token(server, "fast")) as fast:
            await connected(fast)
            await fast.request({"action": "subscribe", "channel": "big"})
            status, ticket = await post_json(server.port, "/pulse/sse/ticket/", {"token": await token(server, "slow")})
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1024)
            sock = writer.get_extra_info("socket")
            import socket as socket_module

            sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 4096)
            writer.write(f"GET /pulse/sse/?ticket={ticket['ticket']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await reader.readuntil(b'"action":"connected"')
            status, _ = await post_json(
                server.port,
                "/pulse/sse/send/",
                {"stream": ticket["stream"], "frames": [json.dumps({"action": "subscribe", "channel": "big"})]},
            )
            assert status == 202
            await asyncio.sleep(0.5)
            received = 0

            async def drain() -> None:
                nonlocal received
                while True:
                    frame = await fast.events.next_frame(30)
                    if frame is not None and frame["action"] == "message":
                        received += 1

            draining = asyncio.ensure_future(drain())
            blob = "z" * 60_000
            count = 0
            try:
                while count < 400:  # up to 24 MB: far over the limit and the kernel's buffers for a non-reader
                    await publish(server, "big", "blob", blob)
                    count += 1
                    if count % 10 == 0 and "Closing a slow consumer" in server.log():
                        break
                assert "Closing a slow consumer" in server.log()
                await publish(server, "big", "after", 1)
                for _ in range(200):
                    if received == count + 1:
                        break
                    await asyncio.sleep(0.05)
                assert received == count + 1  # the reader that keeps up got everything
            finally:
                draining.cancel()
            writer.transport.abort()
