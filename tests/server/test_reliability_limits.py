"""Limits per identity (docs/security.md): one client id cannot hold unbounded connections (WebSocket
and SSE, counted across processes with Redis, healed after a ``kill -9``), one connection cannot be present on
unbounded channels, and one client id alone cannot fill a channel's presence (``presence_full``) and lock the
next real user out.

The in-process tests drive the consumer with Channels' communicator on both backends (memory, Redis) and the
default settings, which are what must stop the attack; the live ones run real daphne processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from django_pulse._conf import DEFAULTS
from tests.support.servers import LiveServer, live_pair, live_server
from tests.support.sseclient import sdk_stream
from tests.support.wsutil import Client, connect, open_client, token
from tests.system.test_reliability_servers import close_code, open_ws, recv_json

pytestmark = [pytest.mark.reliability, pytest.mark.django_db(transaction=True)]


async def try_connect(client_id: str) -> tuple[Client, dict[str, Any]]:
    """A socket and the answer to its ``auth``: ``connected`` or the error that refused it."""
    client = await open_client()
    await client.send({"action": "auth", "token": await token(client_id), "ref": 1})
    return client, await client.recv()


# --- connections per client id -------------------------------------------------------------------------------


async def test_one_token_opening_many_sockets_is_refused_past_the_default_limit(backend: str) -> None:
    limit = DEFAULTS["MAX_CONNECTIONS_PER_CLIENT"]
    assert 10 <= limit <= 100  # several tabs on a few devices pass; the 1,001 sockets do not
    admitted = [await connect("attacker") for _ in range(limit)]
    extra, answer = await try_connect("attacker")
    assert (answer["action"], answer["code"], answer.get("ref")) == ("error", "too_many_connections", 1), answer
    assert "MAX_CONNECTIONS_PER_CLIENT" in answer["message"]
    assert await extra.closed() == 4009
    # Another identity is not affected, and a closed connection frees its slot.
    other = await connect("bob")
    await admitted.pop().close()
    again = await connect("attacker")
    for client in [*admitted, other, again]:
        await client.close()


async def test_a_refused_connection_holds_no_slot_and_sends_no_connected_signal(backend: str, settings: Any) -> None:
    from django_pulse import signals

    settings.PULSE = {**settings.PULSE, "MAX_CONNECTIONS_PER_CLIENT": 1}
    seen: list[str] = []

    def receiver(signal: Any, **kwargs: Any) -> None:
        seen.append("connected" if signal is signals.client_connected else "disconnected")

    signals.client_connected.connect(receiver, dispatch_uid="limits-test-c")
    signals.client_disconnected.connect(receiver, dispatch_uid="limits-test-d")
    try:
        first = await connect("alice")
        for _ in range(3):
            extra, answer = await try_connect("alice")
            assert answer["code"] == "too_many_connections"
            assert await extra.closed() == 4009
        await first.close()
        second = await connect("alice")  # the refused ones took nothing
        await second.close()
    finally:
        signals.client_connected.disconnect(dispatch_uid="limits-test-c")
        signals.client_disconnected.disconnect(dispatch_uid="limits-test-d")
    assert seen == ["connected", "disconnected", "connected", "disconnected"]


async def ws_answer(server: LiveServer, client_id: str) -> tuple[Any, dict[str, Any]]:
    token_value = (await asyncio.to_thread(server.token, client_id))["token"]
    ws = await open_ws(server)
    await ws.send(json.dumps({"action": "auth", "token": token_value, "ref": 1}))
    return ws, await recv_json(ws)


LIVENESS = {"PROCESS_HEARTBEAT": 0.5, "PROCESS_TIMEOUT": 2.0}


@pytest.mark.processes
@pytest.mark.redis
@pytest.mark.slow
async def test_the_limit_counts_across_two_processes_and_heals_after_kill_9(redis_url: str, redis_prefix: str) -> None:
    pulse = {"MAX_CONNECTIONS_PER_CLIENT": 4, **LIVENESS}
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix, pulse=pulse) as (doomed, survivor):
        held = []
        for server in (doomed, doomed, survivor, survivor):
            ws, answer = await ws_answer(server, "attacker")
            assert answer["action"] == "connected", answer
            held.append(ws)
        for server in (doomed, survivor):  # full, whichever process the next socket reaches
            ws, answer = await ws_answer(server, "attacker")
            assert (answer["action"], answer["code"]) == ("error", "too_many_connections"), answer
            assert await close_code(ws) == 4009
        ws, answer = await ws_answer(survivor, "someone-else")
        assert answer["action"] == "connected"
        await ws.close()

        doomed.kill()  # two slots held by a process that runs no clean-up
        killed = time.monotonic()
        bound = LIVENESS["PROCESS_TIMEOUT"] + LIVENESS["PROCESS_HEARTBEAT"]  # docs/security.md
        while True:
            ws, answer = await ws_answer(survivor, "attacker")
            if answer["action"] == "connected":
                break
            assert await close_code(ws) == 4009
            assert time.monotonic() - killed < bound + 10, "the dead process's slots were never released"
            await asyncio.sleep(0.2)
        healed = time.monotonic() - killed
        print(f"slots of the killed process released after {healed:.1f} s (bound {bound} s + a sweep round)")
        assert healed < bound + 10
        ws2, answer = await ws_answer(survivor, "attacker")  # both of the dead process's slots came back
        assert answer["action"] == "connected", answer
        ws3, answer = await ws_answer(survivor, "attacker")
        assert answer["code"] == "too_many_connections"  # and no more
        for sock in [*held[2:], ws, ws2, ws3]:
            await sock.close()


@pytest.mark.processes
@pytest.mark.slow
async def test_sse_streams_count_against_the_same_limit() -> None:
    with live_server(pulse={"MAX_CONNECTIONS_PER_CLIENT": 2}) as server:
        token_value = (await asyncio.to_thread(server.token, "alice"))["token"]
        ws, answer = await ws_answer(server, "alice")
        assert answer["action"] == "connected"
        async with sdk_stream(server.port, token_value) as stream:
            frame = await stream.events.next_frame()
            assert frame is not None and frame["action"] == "connected", frame
            # Two open (one WebSocket, one SSE): a third of either kind is refused.
            extra, answer = await ws_answer(server, "alice")
            assert answer["code"] == "too_many_connections"
            assert await close_code(extra) == 4009
            async with sdk_stream(server.port, token_value) as refused:
                frames = await refused.events.frames_until(lambda f: f["action"] == "close")
                assert frames[0]["action"] == "error" and frames[0]["code"] == "too_many_connections", frames
                assert frames[-1] == {"action": "close", "code": 4009, "reason": "too_many_connections"}
                assert await refused.events.ended()
        # The SSE stream ended: its slot is free again.
        deadline = time.monotonic() + 10
        while True:
            again, answer = await ws_answer(server, "alice")
            if answer["action"] == "connected" or time.monotonic() > deadline:
                break
            await again.close()
            await asyncio.sleep(0.1)
        assert answer["action"] == "connected", answer
        for sock in (ws, again):
            await sock.close()


# --- presence ---------------------------------------------------------------------------------------------


async def test_one_client_cannot_fill_a_presence_channel(backend: str, settings: Any) -> None:
    # The attack with a channel of 60 slots: one token opens every socket it may and enters from each.
    settings.PULSE = {**settings.PULSE, "PRESENCE_MAX_MEMBERS": 60}
    per_client = DEFAULTS["PRESENCE_MAX_MEMBERS_PER_CLIENT"]
    assert 5 <= per_client < DEFAULTS["PRESENCE_MAX_MEMBERS"]
    sockets: list[Client] = []
    codes: list[str] = []
    while True:
        client, answer = await try_connect("attacker")
        if answer["action"] != "connected":
            await client.closed()
            break
        sockets.append(client)
        reply = await client.request("presence.enter", channel="room", data={"x": "y" * 100})
        codes.append(reply["action"] if reply["action"] == "ok" else reply["code"])
    assert codes.count("ok") == per_client
    assert set(codes[per_client:]) == {"presence_client_limit"}, codes
    # The next real user still enters.
    bob = await connect("bob")
    reply = await bob.request("presence.enter", channel="room", data={"name": "Bob"})
    assert reply["action"] == "ok", reply
    assert (await bob.request("presence.get", channel="room"))["members"][-1]["clientId"] == "bob"
    # A slot freed by the client is its own to take again.
    assert (await sockets[0].request("presence.leave", channel="room"))["action"] == "ok"
    assert (await sockets[-1].request("presence.enter", channel="room"))["action"] == "ok"
    for client in [*sockets, bob]:
        await client.close()


async def test_presence_full_still_applies_to_many_clients(backend: str, settings: Any) -> None:
    settings.PULSE = {**settings.PULSE, "PRESENCE_MAX_MEMBERS": 3, "PRESENCE_MAX_MEMBERS_PER_CLIENT": 2}
    clients = [await connect(name) for name in ("a", "a", "b", "c")]
    codes = [(await c.request("presence.enter", channel="room")).get("code", "ok") for c in clients]
    assert codes == ["ok", "ok", "ok", "presence_full"]
    for client in clients:
        await client.close()


async def test_one_connection_cannot_enter_presence_on_more_channels_than_the_limit(backend: str) -> None:
    limit = DEFAULTS["PRESENCE_MAX_CHANNELS"]
    assert 8 <= limit < 400  # the connection entered 400 channels
    alice = await connect("alice")
    for i in range(limit):
        assert (await alice.request("presence.enter", channel=f"room{i}", data="x" * 100))["action"] == "ok"
    reply = await alice.request("presence.enter", channel="one-too-many")
    assert (reply["action"], reply["code"]) == ("error", "too_many_presence_channels"), reply
    assert (await alice.request("presence.get", channel="one-too-many"))["members"] == []
    # Updating a channel it is on is fine at the limit; leaving one makes room.
    assert (await alice.request("presence.enter", channel="room0", data="again"))["action"] == "ok"
    assert (await alice.request("presence.leave", channel="room1"))["action"] == "ok"
    assert (await alice.request("presence.enter", channel="one-too-many"))["action"] == "ok"
    # The limit is per connection: another connection of the same client has its own.
    other = await connect("alice")
    assert (await other.request("presence.enter", channel="elsewhere"))["action"] == "ok"
    await alice.close()
    await other.close()


def test_the_settings_of_the_limits_are_checked(settings: Any) -> None:
    from django_pulse._checks import check_settings

    settings.PULSE = {"PRESENCE_MAX_MEMBERS": 10, "PRESENCE_MAX_MEMBERS_PER_CLIENT": 10}
    assert "django_pulse.W040" in [m.id for m in check_settings(None)]
    settings.PULSE = {"PRESENCE_MAX_MEMBERS": 10, "PRESENCE_MAX_MEMBERS_PER_CLIENT": 9}
    assert "django_pulse.W040" not in [m.id for m in check_settings(None)]
    settings.PULSE = {"PRESENCE_MAX_MEMBERS_PER_CLIENT": 0}  # off: one identity may fill a channel again
    assert "django_pulse.W040" in [m.id for m in check_settings(None)]
    settings.PULSE = {"MAX_CONNECTIONS_PER_CLIENT": -1, "PRESENCE_MAX_CHANNELS": 2.5}
    assert [m.id for m in check_settings(None)].count("django_pulse.E050") == 2
    settings.PULSE = {"CHANNEL_TTL": 60, "HISTORY_TTL": 120}
    assert "django_pulse.W041" in [m.id for m in check_settings(None)]
    settings.PULSE = {}
    assert not check_settings(None)


async def test_a_signed_in_visitors_unidirectional_streams_count_and_are_refused_with_429(
    settings: Any, runtime_stopped: None
) -> None:
    from urllib.parse import quote

    from asgiref.sync import sync_to_async
    from channels.testing import HttpCommunicator
    from django.conf import settings as django_settings
    from django.contrib.auth import get_user_model
    from django.test import Client as DjangoClient

    from django_pulse.streams import sign_stream
    from tests.asgi import application

    settings.PULSE = {**settings.PULSE, "MAX_CONNECTIONS_PER_CLIENT": 1}

    def login() -> tuple[str, str]:
        user = get_user_model().objects.create_user("visitor", password="pw-12345678")
        browser = DjangoClient()
        browser.force_login(user)
        return str(user.pk), browser.cookies[django_settings.SESSION_COOKIE_NAME].value

    client_id, session = await sync_to_async(login)()
    tab = await connect(client_id)  # the visitor's one allowed connection
    comm = HttpCommunicator(
        application,
        "GET",
        f"/pulse/sse/?stream={quote(sign_stream('feed'))}",
        headers=[(b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={session}".encode())],
    )
    response = await comm.get_response(timeout=5)
    assert response["status"] == 429, response
    assert json.loads(response["body"])["error"]["code"] == "too_many_connections"
    await tab.close()
