"""The WebSocket consumer, driven in-process with Channels' WebsocketCommunicator (memory broker).

Every error path answers with the documented error frame or close code, and other connections carry on.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from django_pulse import pulse, signals
from django_pulse.exceptions import Unavailable
from django_pulse.models import PulseApp
from django_pulse.protocol import Action, Request
from django_pulse.protocol.tokens import issue_token
from django_pulse.server.consumer import PulseConsumer
from tests.asgi import application
from tests.support.wsutil import connect, open_client, token

pytestmark = pytest.mark.django_db(transaction=True)


async def auth_fails(raw_token: str) -> tuple[dict[str, Any], int]:
    client = await open_client()
    await client.send({"action": "auth", "token": raw_token, "ref": 1})
    frame = await client.recv()
    code = await client.closed()
    await client.close()
    return frame, code


async def make_app(kb_id: str, *, enabled: bool = True) -> PulseApp:
    app, _ = await sync_to_async(PulseApp.objects.ensure)(kb_id)
    if not enabled:
        app.enabled = False
        await app.asave()
    return app


# -- authentication --------------------------------------------------------------------------------------


async def test_connected_frame_announces_connection_and_limits() -> None:
    alice = await connect("alice")
    frame = alice.connected
    assert frame["clientId"] == "alice" and frame["kbId"] == "default"
    assert frame["connectionId"].startswith("c_")
    assert frame["expiresAt"] > time.time() * 1000
    assert frame["limits"] == {
        "maxMessageSize": 65536,
        "maxSubscriptions": 128,
        "heartbeatInterval": 15000,
        "heartbeatGrace": 10000,
        "maxPresenceData": 2048,
        "publishRate": 50,
        "whisperRate": 10,
    }
    await alice.close()


async def test_requests_before_auth_get_not_authenticated_and_the_connection_stays() -> None:
    client = await open_client()
    reply = await client.request("subscribe", channel="posts")
    assert reply["action"] == "error" and reply["code"] == "not_authenticated"
    await client.send({"action": "auth", "token": await token("bob")})
    assert (await client.recv())["action"] == "connected"
    await client.close()


async def test_auth_timeout_closes_4008(settings: Any) -> None:
    settings.PULSE = {"AUTH_TIMEOUT": 0.2}
    client = await open_client()
    assert await client.closed() == 4008
    await client.close()


@pytest.mark.parametrize("raw", ["garbage", "a.b.c", "e30.e30.e30"])
async def test_malformed_token_closes_4001(raw: str) -> None:
    frame, code = await auth_fails(raw)
    assert (frame["code"], frame["ref"], code) == ("token_invalid", 1, 4001)


async def test_oversized_token_is_a_bad_request() -> None:
    client = await open_client()
    reply = await client.request("auth", token="x" * 9000)
    assert reply["code"] == "bad_request" and "'token'" in reply["message"]
    await client.close()


async def test_forged_token_closes_4001() -> None:
    await make_app("default")
    forged, _ = issue_token(
        secret="not-the-secret-but-long-enough-for-hs256!", kb_id="default", client_id="eve", capabilities={}, ttl=60
    )
    frame, code = await auth_fails(forged)
    assert (frame["code"], code) == ("token_invalid", 4001)


async def test_expired_token_closes_4002() -> None:
    app = await make_app("default")
    old, _ = issue_token(
        secret=app.token_secret, kb_id="default", client_id="u", capabilities={}, ttl=60, now=time.time() - 3600
    )
    frame, code = await auth_fails(old)
    assert (frame["code"], code) == ("token_expired", 4002)


async def test_unknown_and_disabled_apps_close_4004_and_4003() -> None:
    ghost, _ = issue_token(secret="s" * 40, kb_id="ghost", client_id="u", capabilities={}, ttl=60)
    frame, code = await auth_fails(ghost)
    assert (frame["code"], code) == ("app_unknown", 4004)
    raw = await token("u", kb_id=(await make_app("shop")).kb_id)
    await make_app("shop", enabled=False)
    frame, code = await auth_fails(raw)
    assert (frame["code"], code) == ("app_disabled", 4003)


async def test_token_refresh_keeps_subscriptions(settings: Any) -> None:
    alice = await connect("alice")
    await alice.request("subscribe", channel="posts")
    fresh = await sync_to_async(pulse.get_token)("alice", ttl=7200)
    reply = await alice.request("auth", token=fresh["token"])
    assert reply == {"action": "ok", "ref": reply["ref"], "expiresAt": fresh["expiresAt"]}
    await pulse.apublish("posts", "e", 1)
    assert (await alice.recv())["data"] == 1
    other = await alice.request("auth", token=await token("mallory"))
    assert other["code"] == "client_id_mismatch"
    bad = await alice.request("auth", token="garbage")
    assert bad["code"] == "token_invalid"
    await pulse.apublish("posts", "e", 2)  # still connected and subscribed
    assert (await alice.recv())["data"] == 2
    await alice.close()


async def test_token_expiry_closes_4002(settings: Any) -> None:
    settings.PULSE = {"TOKEN_LEEWAY": 0}
    alice = await connect("alice", ttl=1)
    assert await alice.closed(timeout=4) == 4002
    await alice.close()


# -- subscribe and publish -----------------------------------------------------------------------------------


async def test_subscribe_publish_receive_in_order_with_serials() -> None:
    alice, bob = await connect("alice"), await connect("bob")
    first = await alice.request("subscribe", channel="posts")
    assert first["action"] == "ok" and first["channel"] == "posts" and first["serial"] == 0 and first["epoch"]
    await bob.request("subscribe", channel="posts")
    ids = [await pulse.apublish("posts", "new_post", {"i": i}) for i in range(3)]
    ids.append(await sync_to_async(pulse.publish)("posts", "new_post", {"i": 3}))
    for client in (alice, bob):
        frames = [await client.recv() for _ in range(4)]
        assert [f["serial"] for f in frames] == [1, 2, 3, 4]
        assert [f["id"] for f in frames] == ids
        assert all(f["action"] == "message" and f["name"] == "new_post" and "clientId" not in f for f in frames)
    again = await alice.request("subscribe", channel="posts")  # idempotent: still one delivery per message
    assert again["serial"] == 4
    await pulse.apublish("posts", "x")
    assert (await alice.recv())["serial"] == 5
    assert await alice.nothing()
    await alice.close()
    await bob.close()


async def test_unsubscribe_stops_delivery() -> None:
    alice = await connect("alice")
    await alice.request("subscribe", channel="a")
    await alice.request("subscribe", channel="b")
    reply = await alice.request("unsubscribe", channel="a")
    assert reply["action"] == "ok" and reply["channel"] == "a"
    assert (await alice.request("unsubscribe", channel="never"))["action"] == "ok"
    await pulse.apublish("a", "e", 1)
    await pulse.apublish("b", "e", 2)
    frame = await alice.recv()
    assert (frame["channel"], frame["data"]) == ("b", 2)
    assert await alice.nothing()
    await alice.close()


async def test_client_publish_carries_client_id_and_needs_the_capability() -> None:
    alice = await connect("alice")
    bob = await connect("bob", capabilities={"posts": ["subscribe"]})
    await bob.request("subscribe", channel="posts")
    reply = await alice.request("publish", channel="posts", name="hi", data={"x": [1]}, id="mine-1")
    assert reply["action"] == "ok" and reply["id"] == "mine-1" and reply["serial"] == 1
    frame = await bob.recv()
    assert frame["clientId"] == "alice" and frame["data"] == {"x": [1]} and frame["id"] == "mine-1"
    denied = await bob.request("publish", channel="posts", name="hi")
    assert denied["code"] == "forbidden"
    await alice.close()
    await bob.close()


async def test_subscribe_needs_the_capability() -> None:
    client = await connect("u", capabilities={"public.*": ["subscribe"]})
    assert (await client.request("subscribe", channel="public.news"))["action"] == "ok"
    assert (await client.request("subscribe", channel="private"))["code"] == "forbidden"
    await client.close()


async def test_apps_never_see_each_others_channels() -> None:
    await make_app("other")
    ours, theirs = await connect("a"), await connect("b", kb_id="other")
    await ours.request("subscribe", channel="posts")
    await theirs.request("subscribe", channel="posts")
    await pulse.apublish("posts", "e", "ours")
    await pulse.apublish("posts", "e", "theirs", kb_id="other")
    assert (await ours.recv())["data"] == "ours"
    assert (await theirs.recv())["data"] == "theirs"
    assert await ours.nothing() and await theirs.nothing()
    await ours.close()
    await theirs.close()


async def test_too_many_subscriptions(settings: Any) -> None:
    settings.PULSE = {"MAX_SUBSCRIPTIONS": 2}
    client = await connect()
    assert client.connected["limits"]["maxSubscriptions"] == 2
    await client.request("subscribe", channel="a")
    await client.request("subscribe", channel="b")
    assert (await client.request("subscribe", channel="a"))["action"] == "ok"
    assert (await client.request("subscribe", channel="c"))["code"] == "too_many_subscriptions"
    await client.request("unsubscribe", channel="a")
    assert (await client.request("subscribe", channel="c"))["action"] == "ok"
    await client.close()


# -- malformed input -----------------------------------------------------------------------------------------


async def test_every_malformed_frame_gets_its_error_and_others_are_unaffected() -> None:
    victim, bystander = await connect("v"), await connect("b")
    await bystander.request("subscribe", channel="posts")
    cases: list[tuple[str | bytes, str]] = [
        ("not json", "invalid_json"),
        ("[1]", "invalid_json"),
        (json.dumps({"ref": 1}), "bad_request"),
        (json.dumps({"action": "dance", "ref": 2}), "unknown_action"),
        (json.dumps({"action": "subscribe", "channel": "bad channel", "ref": 3}), "invalid_channel"),
        (json.dumps({"action": "publish", "channel": "a", "ref": 4}), "bad_request"),
        (json.dumps({"action": "presence.update", "channel": "a", "ref": 5}), "not_present"),
        (json.dumps({"action": "pong", "big": "x" * 70000}), "message_too_large"),
    ]
    for text, code in cases:
        await victim.send(text)
        frame = await victim.recv()
        assert frame["action"] == "error" and frame["code"] == code, (text[:40], frame)
        assert frame["message"]
    await victim.comm.send_to(bytes_data=b"\x00\x01")
    assert (await victim.recv())["code"] == "unsupported_frame"
    # The bad request's ref is echoed when it could be read.
    reply = await victim.request("publish", channel="a")
    assert "'name'" in reply["message"]
    await pulse.apublish("posts", "e", "still here")
    assert (await bystander.recv())["data"] == "still here"
    assert (await victim.request("subscribe", channel="ok"))["action"] == "ok"
    await victim.close()
    await bystander.close()


async def test_publish_too_large_and_bad_id() -> None:
    client = await connect()
    reply = await client.request("publish", channel="a", name="e", data="x" * 65400)
    assert reply["code"] == "message_too_large"
    await client.close()


async def test_pong_gets_no_reply() -> None:
    client = await connect()
    await client.send({"action": "pong", "ref": 1})
    assert await client.nothing()
    await client.close()


# -- limits ---------------------------------------------------------------------------------------------------


async def test_inbound_rate_limit_then_flood_close_4029(settings: Any) -> None:
    settings.PULSE = {"RATE_LIMIT": 1, "RATE_BURST": 5}
    client = await connect()  # the auth frame took one token of the burst
    for _ in range(4):
        await client.send({"action": "pong"})
    await client.send({"action": "subscribe", "channel": "a", "ref": 99})
    frame = await client.recv()
    assert frame == {"action": "error", "ref": 99, "code": "rate_limited", "message": frame["message"]}
    for _ in range(20):
        await client.send({"action": "pong"})
    assert await client.closed() == 4029
    await client.close()


async def test_client_publish_rate(settings: Any) -> None:
    settings.PULSE = {"PUBLISH_RATE": 2}
    client = await connect()
    codes = [(await client.request("publish", channel="a", name="e")).get("code", "ok") for _ in range(4)]
    assert codes[:2] == ["ok", "ok"] and "rate_limited" in codes[2:]
    await client.close()


async def test_heartbeat_pings_and_closes_a_silent_client_4011(settings: Any) -> None:
    settings.PULSE = {"HEARTBEAT_INTERVAL": 0.2, "HEARTBEAT_GRACE": 0.2}
    client = await connect()
    output = await client.comm.receive_output(2)
    assert json.loads(output["text"]) == {"action": "ping"}
    await client.send({"action": "pong"})
    started = time.monotonic()
    assert await client.closed(timeout=3) == 4011
    assert time.monotonic() - started >= 0.3
    await client.close()


async def test_answering_pings_keeps_the_connection(settings: Any) -> None:
    settings.PULSE = {"HEARTBEAT_INTERVAL": 0.1, "HEARTBEAT_GRACE": 0.2}
    client = await connect()
    deadline = time.monotonic() + 0.6  # twice the 0.3 s after which a silent client is closed
    while time.monotonic() < deadline:
        output = await client.comm.receive_output(1)
        assert output["type"] == "websocket.send"
        await client.send({"action": "pong"})
    assert (await client.request("subscribe", channel="a"))["action"] == "ok"
    await client.close()


# -- control and failures ----------------------------------------------------------------------------------


async def test_close_app_connections_and_disconnect_client() -> None:
    await make_app("other")
    a1, a2, b = await connect("alice"), await connect("alice"), await connect("bob")
    other = await connect("alice", kb_id="other")
    await sync_to_async(pulse.disconnect)("alice")
    assert await a1.closed() == 4005 and await a2.closed() == 4005
    assert await b.nothing() and await other.nothing()
    await pulse.aclose_app_connections("default")
    assert await b.closed() == 4003
    assert await other.nothing()
    for client in (a1, a2, b, other):
        await client.close()


async def test_handler_crash_is_internal_error_and_connection_lives(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(conn: PulseConsumer, request: Request) -> dict[str, Any]:
        raise RuntimeError("boom")

    original = PulseConsumer.handlers[Action.PRESENCE_GET]
    PulseConsumer.handlers[Action.PRESENCE_GET] = broken
    try:
        client, other = await connect(), await connect("o")
        await other.request("subscribe", channel="posts")
        reply = await client.request("presence.get", channel="room")
        assert reply["code"] == "internal_error" and "boom" not in reply["message"]
        assert "boom" in caplog.text
        assert (await client.request("subscribe", channel="a"))["action"] == "ok"
        await pulse.apublish("posts", "e", 1)
        assert (await other.recv())["data"] == 1
    finally:
        PulseConsumer.handlers[Action.PRESENCE_GET] = original
    await client.close()
    await other.close()


async def test_broker_unavailable_is_an_error_reply(settings: Any) -> None:
    from tests.support.servers import free_port

    alice = await connect()
    settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # a new broker that cannot connect
    reply = await alice.request("subscribe", channel="posts")
    assert reply["code"] == "unavailable"
    reply = await alice.request("publish", channel="posts", name="e")
    assert reply["code"] == "unavailable"
    with pytest.raises(Unavailable):
        await pulse.apublish("posts", "e")
    from django_pulse.server.runtime import get_runtime

    await get_runtime().broker.aclose()
    await alice.close()


async def test_signals_connected_disconnected_published(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(signal: Any, **kwargs: Any) -> None:
        kwargs.pop("sender")
        seen.append((name_of[signal], kwargs))

    def failing(**kwargs: Any) -> None:
        raise ValueError("receiver bug")

    name_of = {
        signals.client_connected: "connected",
        signals.client_disconnected: "disconnected",
        signals.message_published: "published",
    }
    for sig in name_of:
        sig.connect(record)
    signals.message_published.connect(failing)
    try:
        alice = await connect("alice")
        conn_id = alice.connected["connectionId"]
        await alice.request("publish", channel="posts", name="e")
        await alice.close()
        await asyncio.sleep(0.05)
    finally:
        for sig in name_of:
            sig.disconnect(record)
        signals.message_published.disconnect(failing)
    kinds = [k for k, _ in seen]
    assert kinds == ["connected", "published", "disconnected"]
    assert seen[0][1] == {"kb_id": "default", "client_id": "alice", "connection_id": conn_id}
    assert seen[1][1]["client_id"] == "alice" and seen[1][1]["serial"] == 1 and seen[1][1]["channel"] == "posts"
    assert seen[2][1]["code"] == 1000 and seen[2][1]["connection_id"] == conn_id
    assert "receiver bug" in caplog.text


async def test_tokens_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    raw = await token("alice")
    client = await open_client()
    await client.send({"action": "auth", "token": raw + "x"})
    await client.recv()
    await client.close()
    alice = await connect("alice")
    await alice.close()
    assert raw not in caplog.text and raw.split(".")[2] not in caplog.text


async def test_origin_check(settings: Any) -> None:
    settings.PULSE = {"ALLOWED_ORIGINS": ["https://good.example"]}
    good = WebsocketCommunicator(application, "/pulse/ws/", headers=[(b"origin", b"https://good.example")])
    assert (await good.connect())[0]
    await good.disconnect()
    bad = WebsocketCommunicator(application, "/pulse/ws/", headers=[(b"origin", b"https://evil.example")])
    assert not (await bad.connect())[0]
    settings.PULSE = {"ALLOWED_ORIGINS": ["*"]}
    anyone = WebsocketCommunicator(application, "/pulse/ws/", headers=[(b"origin", b"https://evil.example")])
    assert (await anyone.connect())[0]
    await anyone.disconnect()
    settings.PULSE = {}
    settings.ALLOWED_HOSTS = ["good.example"]
    hosts = WebsocketCommunicator(application, "/pulse/ws/", headers=[(b"origin", b"https://evil.example")])
    assert not (await hosts.connect())[0]


async def test_authorize_hooks_decide_subscribe_and_publish() -> None:
    from django.contrib.auth import get_user_model

    from django_pulse.authorization import authorize, unregister

    user = await get_user_model().objects.acreate(username="owner")
    calls: list[tuple[Any, str]] = []

    @authorize("orders.{order_id}")
    def order_channel(who: Any, order_id: str) -> bool:
        calls.append((who, order_id))
        return order_id == "1"

    try:
        client = await connect(str(user.pk))
        assert (await client.request("subscribe", channel="orders.1"))["action"] == "ok"
        assert (await client.request("subscribe", channel="orders.2"))["code"] == "forbidden"
        assert (await client.request("publish", channel="orders.2", name="e"))["code"] == "forbidden"
        assert (await client.request("subscribe", channel="private-x"))["code"] == "forbidden"
        assert (await client.request("subscribe", channel="public"))["action"] == "ok"
        assert [c[1] for c in calls] == ["1", "2", "2"]
        assert all(c[0].pk == user.pk for c in calls)
        await client.close()
    finally:
        unregister("orders.{order_id}")


async def test_auth_while_the_broker_is_unreachable_closes_4503(settings: Any) -> None:
    from django_pulse.server.runtime import get_runtime
    from tests.support.servers import free_port

    raw = await token("alice")
    settings.PULSE = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    frame, code = await auth_fails(raw)
    assert (frame["code"], code) == ("unavailable", 4503)
    await get_runtime().broker.aclose()


async def test_a_close_the_server_never_confirms_ends_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client never answers the close (and the server never sends websocket.disconnect): after
    ABANDON_AFTER the consumer cleans up and returns, instead of staying subscribed forever."""
    from django_pulse.server import consumer
    from django_pulse.server.runtime import get_runtime

    monkeypatch.setattr(consumer, "ABANDON_AFTER", 0.2)
    alice = await connect("alice")
    await alice.request("subscribe", channel="posts")
    await sync_to_async(pulse.disconnect)("alice")
    assert await alice.closed() == 4005
    await asyncio.wait_for(asyncio.shield(alice.comm.future), 2)
    assert "m:default:posts" not in get_runtime().hub.local_topics() and not get_runtime().hub.connections


async def test_a_connection_that_arrives_during_the_graceful_shutdown_is_told_to_go_elsewhere() -> None:
    """After ``shutdown()`` began, the server may still accept (it stops listening later): the newcomer gets 1001
    at once rather than a dropped socket when the process exits."""
    from django_pulse.server.runtime import get_runtime
    from django_pulse.server.shutdown import shutdown

    assert await shutdown() == 0
    assert await shutdown() == 0  # a second call (granian: the signal hook, then the lifespan) does nothing
    assert get_runtime().shut_down
    late = WebsocketCommunicator(application, "/pulse/ws/")
    assert (await late.connect())[0]
    closed = await late.receive_output(2)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1001)
    await late.wait()


class _NoLookup:
    """Stands for the process's runtime once connections are open: any use fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the runtime was looked up again on a connection's path (.{name})")


async def test_a_connection_keeps_the_runtime_it_was_made_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once made, a connection never looks the runtime up again: subscribe, publish, whisper, history, presence
    and the connection's end all run on the runtime it took when it was made, even if the process's runtime
    is no longer to be found."""
    from django_pulse.server import runtime as runtime_module

    alice = await connect("alice")
    bob = await connect("bob")
    real = runtime_module.get_runtime()
    monkeypatch.setattr(runtime_module, "_runtime", _NoLookup())
    try:
        assert (await bob.request("subscribe", channel="room"))["action"] == "ok"
        assert (await bob.request("presence.subscribe", channel="room"))["action"] == "ok"
        assert (await alice.request("presence.enter", channel="room", data={"x": 1}))["action"] == "ok"
        joined = await bob.recv()
        assert (joined["action"], joined["event"], joined["member"]["clientId"]) == ("presence", "enter", "alice")
        assert (await alice.request("publish", channel="room", name="said", data="hi"))["action"] == "ok"
        message = await bob.recv()
        assert (message["action"], message["name"], message["data"]) == ("message", "said", "hi")
        assert (await alice.request("whisper", channel="room", name="typing"))["action"] == "ok"
        assert (await bob.recv())["action"] == "whisper"
        history = await bob.request("history", channel="room")
        assert [m["data"] for m in history["messages"]] == ["hi"]
        members = await bob.request("presence.get", channel="room")
        assert [m["clientId"] for m in members["members"]] == ["alice"]
        await alice.close()
        left = await bob.recv()
        assert (left["action"], left["event"], left["member"]["clientId"]) == ("presence", "leave", "alice")
        assert (await bob.request("unsubscribe", channel="room"))["action"] == "ok"
        await bob.close()
    finally:
        # Put back before the teardown resets the runtime.
        monkeypatch.setattr(runtime_module, "_runtime", real)
