"""The HTTP API, its Python client and ``manage.py pulse`` against real daphne processes and WebSockets.

Embedded mode (in-memory state inside the server): the command runs in its own process and reaches the
server over HTTP with its admin credential. Redis mode: two daphne processes; the command reads Redis.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from django_pulse.clients.http import BadRequest, NotAuthenticated, PulseClient, PulseConnectionError
from django_pulse.clients.websocket import Realtime
from tests.support.servers import LiveServer, free_port, live_pair, live_server, pulse_cmd

pytestmark = pytest.mark.slow


def pulse_json(server: LiveServer, *args: str) -> Any:
    done = pulse_cmd(server, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def embedded() -> Iterator[LiveServer]:
    port = free_port()
    with live_server(port=port, pulse={"SERVER_URL": f"http://127.0.0.1:{port}"}) as server:
        yield server


@pytest.fixture
def api_key(embedded: LiveServer) -> str:
    return str(pulse_json(embedded, "enable")["apiKey"])


async def connect(server: LiveServer, key: str, client_id: str) -> Realtime:
    # These clients publish too: granted explicitly (not a default capability).
    token = await asyncio.to_thread(
        PulseClient(server.url + "/pulse/", key).get_token, client_id, capabilities={"*": ["*"]}
    )
    return await Realtime.connect(token["endpoint"], token["token"])


async def eventually(get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """Poll ``get`` (in a thread) until ``ok`` holds or ``timeout`` passes; returns the last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await asyncio.to_thread(get)
        if ok(value) or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.5)


# -- the HTTP client -----------------------------------------------------------------------------------------


def test_http_client_token_and_errors(embedded: LiveServer, api_key: str) -> None:
    client = PulseClient(embedded.url + "/pulse", api_key)
    token = client.get_token("alice", ttl=120)
    assert token["clientId"] == "alice" and token["kbId"] == "default"
    assert token["endpoint"] == embedded.ws_url
    with pytest.raises(NotAuthenticated) as info:
        PulseClient(embedded.url + "/pulse/", "pk_deadbeef_wrong").get_token("alice")
    assert info.value.status == 401 and info.value.code == "authentication_failed"
    with pytest.raises(BadRequest) as bad:
        client.publish("no spaces allowed", "e")
    assert bad.value.code == "invalid_channel"
    with pytest.raises(PulseConnectionError, match="No Pulse server answers"):
        PulseClient(f"http://127.0.0.1:{free_port()}/pulse/", api_key).channels()


async def test_http_publish_presence_channels_and_idempotency(embedded: LiveServer, api_key: str) -> None:
    client = PulseClient(embedded.url + "/pulse/", api_key)
    rt = await connect(embedded, api_key, "alice")
    try:
        await rt.subscribe("posts")
        await rt.request("presence.enter", channel="posts", data={"name": "Alice"})
        first = await asyncio.to_thread(client.publish, "posts", "new_post", {"n": 1}, id="post-1")
        again = await asyncio.to_thread(client.publish, "posts", "new_post", {"n": 1}, id="post-1")
        assert first == again == "post-1"
        ids = await asyncio.to_thread(
            client.publish_batch,
            [
                {"channel": "posts", "event": "new_post", "data": {"n": 2}},
                {"channel": "posts", "event": "new_post", "data": {"n": 3}, "id": "post-1"},  # a repeat: skipped
                {"channel": "posts", "event": "new_post", "data": {"n": 4}},
            ],
        )
        assert len(ids) == 3 and ids[1] == "post-1"
        seen = []
        while len(seen) < 3:
            frame = await rt.next_event(timeout=10)
            if frame.get("action") == "message":
                seen.append(frame["data"]["n"])
        assert seen == [1, 2, 4]
        # A client publish over the WebSocket shares the record: the repeat is acknowledged without a serial.
        reply = await rt.publish("posts", "new_post", {"n": 5}, id="post-1")
        assert reply["id"] == "post-1" and reply["serial"] is None
        with pytest.raises(asyncio.TimeoutError):
            extra = await rt.next_event(timeout=0.5)
            assert extra.get("action") != "message", extra  # no second delivery of post-1

        presence = await asyncio.to_thread(client.presence, "posts")
        assert presence["count"] == 1
        assert [(m["clientId"], m["data"]) for m in presence["members"]] == [("alice", {"name": "Alice"})]
        channels = await asyncio.to_thread(client.channels)
        assert {"name": "posts", "subscribers": 1, "presence": 1} in channels
    finally:
        await rt.close()


# -- manage.py pulse in its own process against the embedded server -----------------------------------------


async def test_cli_reaches_the_embedded_server(embedded: LiveServer, api_key: str) -> None:
    rt = await connect(embedded, api_key, "user_a")
    try:
        await rt.subscribe("posts")
        await rt.request("presence.enter", channel="posts", data={"name": "user_a"})

        presence = await asyncio.to_thread(pulse_cmd, embedded, "presence", "posts")
        assert presence.returncode == 0, presence.stderr
        assert presence.stdout.splitlines()[0] == "1 member(s) on posts (1 client(s))."
        assert "user_a" in presence.stdout and '{"name": "user_a"}' in presence.stdout

        published = await asyncio.to_thread(pulse_cmd, embedded, "publish", "posts", "Hello from the CLI")
        assert published.returncode == 0, published.stderr
        frame = await rt.next_event(timeout=10)
        assert (frame["name"], frame["data"]) == ("message", "Hello from the CLI")
        published = await asyncio.to_thread(
            pulse_cmd, embedded, "publish", "posts", "--event", "new_post", "--data", '{"post": {"id": 9}}'
        )
        assert published.returncode == 0, published.stderr
        frame = await rt.next_event(timeout=10)
        assert (frame["name"], frame["data"]) == ("new_post", {"post": {"id": 9}})

        channels = await asyncio.to_thread(pulse_json, embedded, "channels")
        assert channels["channels"] == [{"name": "posts", "subscribers": 1, "presence": 1}]
        channels_table = await asyncio.to_thread(pulse_cmd, embedded, "channels")
        assert channels_table.stdout.split() == ["CHANNEL", "SUBSCRIBERS", "PRESENCE", "posts", "1", "1"]

        status = await asyncio.to_thread(pulse_cmd, embedded, "status")
        assert status.returncode == 0, status.stderr
        assert "embedded mode" in status.stdout and f"{embedded.url} answers" in status.stdout
        info = await asyncio.to_thread(pulse_json, embedded, "status")
        assert info["channels"] == 1 and info["connections"] == 1

        bad = await asyncio.to_thread(pulse_cmd, embedded, "publish", "bad channel", "x")
        assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "invalid_channel" in bad.stderr

        disabled = await asyncio.to_thread(pulse_cmd, embedded, "disable")
        assert disabled.returncode == 0, disabled.stderr
        assert await asyncio.wait_for(rt.wait_closed(), 10) == 4003
        refused = await asyncio.to_thread(pulse_cmd, embedded, "publish", "posts", "after disable")
        assert refused.returncode == 1 and "app_disabled" in refused.stderr
    finally:
        await rt.close()


def test_cli_without_a_server_says_so(embedded: LiveServer) -> None:
    env = {**embedded.env, "PULSE_LIVE_SETTINGS": json.dumps({"SERVER_URL": f"http://127.0.0.1:{free_port()}"})}
    done = pulse_cmd(embedded, "channels", env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("CommandError: No Pulse server answers at http://127.0.0.1:")
    assert done.stderr.strip().count("\n") == 0


# -- Redis: two server processes, the command reads the shared state -----------------------------------------


@pytest.mark.redis
async def test_cli_with_redis_counts_both_processes(redis_url: str, redis_prefix: str) -> None:
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (a, b):
        key = str(pulse_json(a, "enable")["apiKey"])
        rt_a = await connect(a, key, "on_a")
        rt_b = await connect(b, key, "on_b")
        try:
            for rt in (rt_a, rt_b):
                await rt.subscribe("posts")
                await rt.request("presence.enter", channel="posts", data={"name": rt.client_id})
            # Subscriber and connection counts are what each process reported at its last heartbeat
            # (every PROCESS_HEARTBEAT = 3 s): wait for both processes' reports.
            expected = [{"name": "posts", "subscribers": 2, "presence": 2}]
            channels = await eventually(lambda: pulse_json(a, "channels"), lambda c: c["channels"] == expected)
            assert channels["channels"] == expected
            info = await eventually(lambda: pulse_json(a, "status"), lambda i: i["connections"] == 2)
            assert info["mode"] == "redis" and info["redis"]["ok"] is True
            assert info["connections"] == 2 and info["channels"] == 1 and info["processes"] == 2
            table = await asyncio.to_thread(pulse_cmd, b, "status")
            assert "redis mode" in table.stdout and "connections: 2" in table.stdout
            assert "processes:   2" in table.stdout
            presence = await asyncio.to_thread(pulse_json, b, "presence", "posts")
            assert sorted(m["clientId"] for m in presence["members"]) == ["on_a", "on_b"]
            done = await asyncio.to_thread(pulse_cmd, a, "publish", "posts", "to both")
            assert done.returncode == 0, done.stderr
            for rt in (rt_a, rt_b):
                frame = await rt.next_event(timeout=10)
                while frame.get("action") != "message":
                    frame = await rt.next_event(timeout=10)
                assert frame["data"] == "to both"
            done = await asyncio.to_thread(pulse_cmd, b, "disable")
            assert done.returncode == 0, done.stderr
            for rt in (rt_a, rt_b):
                assert await asyncio.wait_for(rt.wait_closed(), 10) == 4003
        finally:
            await rt_a.close()
            await rt_b.close()


async def test_http_client_publishes_for_the_others(embedded: LiveServer, api_key: str) -> None:
    """``PulseClient.publish(..., exclude=)`` (the page's connection id, sent with its request): every other
    subscriber gets the message; the excluded connection gets only its place (``rt.positions``)."""
    client = PulseClient(embedded.url + "/pulse/", api_key)
    tab, other = await connect(embedded, api_key, "alice"), await connect(embedded, api_key, "alice")
    try:
        for rt in (tab, other):
            await rt.subscribe("chat")
        message_id = await asyncio.to_thread(client.publish, "chat", "said", "hi", exclude=tab.connection_id)
        assert (await other.next_event(timeout=10))["id"] == message_id
        with pytest.raises(asyncio.TimeoutError):
            await tab.next_event(timeout=0.5)
        assert tab.positions["chat"][0] == 1
        with pytest.raises(BadRequest, match="exclude"):
            await asyncio.to_thread(client.publish, "chat", "said", "hi", exclude="not a connection id")
    finally:
        await tab.close()
        await other.close()
