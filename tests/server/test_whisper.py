"""Whispers and others-only publishes, over the WebSocket (consumer in-process, memory|Redis
broker) and across two real server processes sharing Redis.

A whisper reaches the channel's other subscribers, never its sender, is never stored and has no serial (so it
never moves anyone's resume position); it needs the ``whisper`` capability and has its own rate limit. A
publish with ``exclude`` is a normal message (serial, history) that its excluded connection gets only as an
``excluded`` stand-in, live and on resume.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from django_pulse import pulse
from django_pulse.protocol import (
    excluded_connection,
    excluded_frame,
    message_frame,
    message_frame_serial,
    message_head,
    parse_frame,
    whisper_frame,
)
from django_pulse.server.recovery import ReplaySink
from django_pulse.testing import capture_published
from tests.support.wsutil import Client, connect, open_client, token

WHISPER_ONLY = {"room": ["subscribe", "whisper"]}


@pytest.fixture
def _no_hooks() -> Iterator[None]:
    from django_pulse import authorization

    saved = list(authorization._hooks)
    authorization.clear_hooks()
    yield
    authorization._hooks[:] = saved


async def frames_until_quiet(client: Client, timeout: float = 0.3) -> list[dict[str, Any]]:
    # Not recv() with a timeout: the communicator cancels the application when its receive times out.
    out = []
    while not await client.nothing(timeout):
        out.append(await client.recv())
    return out


# -- the sans-I/O pieces ------------------------------------------------------------------------------------


def test_frames_name_the_connection_they_exclude_at_their_start() -> None:
    head = message_head(channel="c", name="n", data_json="{}", id="m1", timestamp=1, exclude="c_abc")
    frame = message_frame(head, 7)
    assert frame.startswith('{"action":"message","exclude":"c_abc",')
    assert excluded_connection(frame) == "c_abc"
    assert message_frame_serial(frame) == 7
    stand_in = excluded_frame(frame)
    assert stand_in == '{"action":"excluded","channel":"c","id":"m1","serial":7}'
    assert message_frame_serial(stand_in) == 7  # a ReplaySink filters it like the message it stands for
    plain = message_frame(message_head(channel="c", name="n", data_json="{}", id="m1", timestamp=1), 7)
    assert excluded_connection(plain) is None and excluded_frame(plain) is None
    whisper = whisper_frame(connection_id="c_x", channel="c", name="typing", data_json="true", client_id="ada")
    assert excluded_connection(whisper) == "c_x"
    assert message_frame_serial(whisper) is None and excluded_frame(whisper) is None


def test_parse_whisper_and_publish_exclude() -> None:
    with pytest.raises(Exception, match="'name'"):
        parse_frame('{"action":"whisper","channel":"c"}', 1000)
    assert parse_frame('{"action":"whisper","channel":"c","name":"t"}', 1000).members["name"] == "t"
    with pytest.raises(Exception, match="exclude"):
        parse_frame('{"action":"publish","channel":"c","name":"t","exclude":"c_\\"x"}', 1000)
    with pytest.raises(Exception, match="exclude"):
        parse_frame('{"action":"publish","channel":"c","name":"t","exclude":true}', 1000)


def test_a_catching_up_subscription_drops_stand_ins_it_replayed_and_keeps_whispers() -> None:
    class Target:
        def __init__(self) -> None:
            self.texts: list[str] = []

        def push(self, message: dict[str, Any], nbytes: int) -> None:
            self.texts.append(message["text"])

    async def run() -> list[str]:
        target = Target()
        sink = ReplaySink(target, lambda s: None)
        whisper = whisper_frame(connection_id="c_x", channel="c", name="t", data_json="1", client_id="a")
        old = '{"action":"excluded","channel":"c","id":"m","serial":3}'
        new = '{"action":"excluded","channel":"c","id":"m","serial":4}'
        for text in (old, whisper, new):
            sink.push({"type": "websocket.send", "text": text}, len(text))
        sink.release(3)
        return target.texts

    texts = asyncio.run(run())
    assert [message_frame_serial(t) for t in texts] == [None, 4]


# -- whispers over the WebSocket ---------------------------------------------------------------------------

pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
async def test_a_whisper_reaches_the_others_only_is_not_stored_and_has_no_serial(backend: str) -> None:
    ada, bob, cy = await connect("ada"), await connect("bob"), await connect("cy")
    for client in (ada, bob, cy):
        await client.request("subscribe", channel="room")
    cy_id = cy.connected["connectionId"]
    reply = await ada.request("whisper", channel="room", name="typing", data={"on": True})
    assert reply == {"action": "ok", "ref": reply["ref"], "channel": "room"}
    for other in (bob, cy):
        frame = await other.recv(timeout=5)
        assert frame == {
            "action": "whisper",
            "connectionId": ada.connected["connectionId"],
            "channel": "room",
            "name": "typing",
            "data": {"on": True},
            "clientId": "ada",
        }
    assert await ada.nothing(0.3)  # never echoed to its sender
    # Not stored, no serial: the channel's counter did not move and the history is empty.
    history = await bob.request("history", channel="room")
    assert (history["serial"], history["messages"]) == (0, [])
    await pulse.apublish("room", "said", "hello")
    assert [(await c.recv(timeout=5))["serial"] for c in (ada, bob, cy)] == [1, 1, 1]
    # cy's resume position is unaffected by whispers: resuming from 1 replays nothing and is exact.
    await cy.close()
    await ada.request("whisper", channel="room", name="typing", data={"on": False})
    assert (await bob.recv(timeout=5))["data"] == {"on": False}
    again = await connect("cy")
    resumed = await again.request("subscribe", channel="room", resume={"serial": 1, "epoch": history["epoch"]})
    assert (resumed["resumed"], resumed["serial"]) == (True, 1)
    assert await again.nothing(0.3)
    assert cy_id != again.connected["connectionId"]
    for client in (ada, bob, again):
        await client.close()


@pytestmark_db
async def test_a_whisper_needs_its_own_capability_which_defaults_do_not_grant(_no_hooks: None) -> None:
    plain = await connect("ada", capabilities=None)  # DEFAULT_CAPABILITIES: subscribe, presence, history
    refused = await plain.request("whisper", channel="room", name="typing")
    assert refused["code"] == "forbidden" and "'whisper'" in refused["message"]
    publisher = await connect("bob", capabilities={"*": ["subscribe", "publish"]})
    assert (await publisher.request("whisper", channel="room", name="typing"))["code"] == "forbidden"
    whisperer = await connect("cy", capabilities=WHISPER_ONLY)
    assert (await whisperer.request("whisper", channel="room", name="typing"))["action"] == "ok"
    assert (await whisperer.request("publish", channel="room", name="said"))["code"] == "forbidden"
    assert (await whisperer.request("whisper", channel="other", name="typing"))["code"] == "forbidden"

    asked: list[str] = []

    @pulse.authorize("team.{team}")
    def team(user: Any, team: str, operation: str) -> bool:
        asked.append(operation)
        return operation != "whisper"

    member = await connect("dee", capabilities={"team.*": ["subscribe", "whisper"]})
    assert (await member.request("subscribe", channel="team.a"))["action"] == "ok"
    assert (await member.request("whisper", channel="team.a", name="typing"))["code"] == "forbidden"
    assert asked == ["subscribe", "whisper"]
    for client in (plain, publisher, whisperer, member):
        await client.close()


@pytestmark_db
async def test_whispers_have_their_own_rate_limit(settings: Any) -> None:
    settings.PULSE = {"WHISPER_RATE": 2, "PUBLISH_RATE": 50}
    ada = await connect("ada")
    assert ada.connected["limits"]["whisperRate"] == 2
    codes = [(await ada.request("whisper", channel="room", name="t"))["action"] for _ in range(3)]
    assert codes == ["ok", "ok", "error"]
    limited = await ada.request("whisper", channel="room", name="t")
    assert limited["code"] == "rate_limited" and "whispers per second" in limited["message"]
    # Publishing is counted apart: still allowed.
    assert (await ada.request("publish", channel="room", name="said"))["action"] == "ok"
    await ada.close()


@pytestmark_db
async def test_a_whisper_is_size_limited_like_a_message(settings: Any) -> None:
    settings.PULSE = {"MAX_MESSAGE_SIZE": 1000}
    ada, bob = await connect("ada"), await connect("bob")
    await bob.request("subscribe", channel="room")
    # The frame ada sends fits; the whisper the server would relay (plus connectionId, clientId) does not.
    refused = await ada.request("whisper", channel="room", name="t", data="x" * 900)
    assert refused["code"] == "message_too_large"
    assert await bob.nothing(0.3)
    await ada.close()
    await bob.close()


# -- others-only publishes ---------------------------------------------------------------------------------


@pytestmark_db
async def test_a_publish_for_the_others_reaches_its_sender_as_a_stand_in(backend: str) -> None:
    ada, bob = await connect("ada"), await connect("bob")
    for client in (ada, bob):
        await client.request("subscribe", channel="room")
    ada_id = ada.connected["connectionId"]
    reply = await ada.request("publish", channel="room", name="said", data="hi", exclude=ada_id)
    assert reply["serial"] == 1
    got = await bob.recv(timeout=5)
    assert (got["action"], got["data"], got["serial"], got["exclude"]) == ("message", "hi", 1, ada_id)
    assert await frames_until_quiet(ada) == [{"action": "excluded", "channel": "room", "id": reply["id"], "serial": 1}]
    # A normal message otherwise: in the history, with its serial; the next one follows without a gap.
    history = await ada.request("history", channel="room")
    assert [(m["data"], m["serial"]) for m in history["messages"]] == [("hi", 1)]
    await pulse.apublish("room", "said", "next")
    assert [(await c.recv(timeout=5))["serial"] for c in (ada, bob)] == [2, 2]
    # A client may not exclude someone else.
    other = await ada.request("publish", channel="room", name="said", exclude=bob.connected["connectionId"])
    assert other["code"] == "bad_request" and "own connection" in other["message"]
    await ada.close()
    await bob.close()


@pytestmark_db
async def test_a_server_publish_excluding_a_connection_and_its_resume(backend: str) -> None:
    """The page's request publishes through the server SDK excluding the page's connection (Echo's toOthers);
    while the page is reconnecting. Its resume gets the stand-in, never the message."""
    ada, bob = await connect("ada"), await connect("bob")
    for client in (ada, bob):
        await client.request("subscribe", channel="room")
    first = await ada.request("subscribe", channel="room")
    ada_id, key, epoch = ada.connected["connectionId"], ada.connected["connectionKey"], first["epoch"]
    await ada.close()
    with capture_published() as published:
        message_id = await pulse.apublish("room", "said", {"text": "mine"}, exclude=ada_id)
        other = await pulse.apublish("room", "said", {"text": "theirs"})
    # The message_published signal (and so the test capture) says whom each was published for the others of.
    assert [(m.id, m.exclude) for m in published.messages] == [(message_id, ada_id), (other, None)]
    assert [(await bob.recv(timeout=5))["id"] for _ in range(2)] == [message_id, other]
    back = await open_client()
    await back.send({"action": "auth", "token": await token("ada"), "recover": key})
    back.connected = await back.recv()
    assert back.connected["recovered"] is True and back.connected["connectionId"] == ada_id
    reply = await back.request("subscribe", channel="room", resume={"serial": 0, "epoch": epoch})
    assert reply["resumed"] is True
    replay = await frames_until_quiet(back)
    assert [(f["action"], f["serial"]) for f in replay] == [("excluded", 1), ("message", 2)]
    assert replay[0] == {"action": "excluded", "channel": "room", "id": message_id, "serial": 1}
    # Another connection (a new tab) resuming from the same point gets both as messages.
    tab = await connect("ada")
    await tab.request("subscribe", channel="room", resume={"serial": 0, "epoch": epoch})
    assert [f["action"] for f in await frames_until_quiet(tab)] == ["message", "message"]
    for client in (back, bob, tab):
        await client.close()


@pytestmark_db
async def test_the_sdk_refuses_an_exclude_that_is_not_a_connection_id() -> None:
    from django_pulse.exceptions import ProtocolViolation

    with pytest.raises(ProtocolViolation, match="exclude"):
        await pulse.apublish("room", "said", 1, exclude='c_"x')
    with pytest.raises(ProtocolViolation, match="exclude"):
        await pulse.apublish_batch([{"channel": "room", "event": "said", "exclude": 7}])


# -- two server processes on Redis -------------------------------------------------------------------------


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.redis
async def test_whispers_and_others_only_publishes_across_two_processes(redis_url: str, redis_prefix: str) -> None:
    from django_pulse.clients import Realtime
    from tests.support.servers import LiveServer, live_pair

    async def client(server: LiveServer, client_id: str, **kwargs: Any) -> Realtime:
        minted = await asyncio.to_thread(server.token, client_id)
        return await Realtime.connect(minted["endpoint"], minted["token"], **kwargs)

    async def quiet(rt: Realtime, timeout: float = 0.5) -> bool:
        try:
            frame = await rt.next_event(timeout)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected {frame}")

    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (first, second):
        ada = await client(first, "ada")
        bob = await client(second, "bob")
        cy = await client(first, "cy")
        for rt in (ada, bob, cy):
            await rt.subscribe("room")
        await ada.whisper("room", "typing", {"on": True})
        for other in (bob, cy):  # bob on the other process, cy on ada's
            frame = await other.next_event(5)
            assert (frame["action"], frame["name"], frame["data"], frame["clientId"]) == (
                "whisper",
                "typing",
                {"on": True},
                "ada",
            )
            assert "serial" not in frame
        assert await quiet(ada)
        assert (await bob.history("room")) == []

        reply = await bob.publish("room", "said", "to the others", to_others=True)
        for other in (ada, cy):
            got = await other.next_event(5)
            assert (got["data"], got["serial"]) == ("to the others", reply["serial"])
        assert await quiet(bob)
        assert bob.positions["room"][0] == reply["serial"] == 1

        # From the HTTP side of the other process, excluding cy (a connection of the first process).
        message_id = await asyncio.to_thread(second.publish, "room", "said", "not for cy", exclude=cy.connection_id)
        for other in (ada, bob):
            assert (await other.next_event(5))["id"] == message_id
        assert await quiet(cy)
        assert cy.positions["room"][0] == 2

        # cy drops and resumes on the other process: the stand-in keeps its position, nothing is replayed as new.
        cy.ws.transport.abort()
        await cy.wait_closed()
        later = await asyncio.to_thread(first.publish, "room", "said", "while away")
        back = await client(second, "cy", recover=cy)
        assert back.resumed == {"room": True}
        assert (await back.next_event(5))["id"] == later
        assert await quiet(back)
        for rt in (ada, bob, back):
            await rt.close()


# -- over SSE's POST commands --------------------------------------------------------------------------------


@pytest.mark.processes
async def test_whispers_and_others_only_publishes_over_sse() -> None:
    from django_pulse.clients import Realtime
    from tests.support.servers import live_server
    from tests.support.sseclient import sdk_stream

    with live_server() as server:
        minted = await asyncio.to_thread(server.token, "bob")
        bob = await Realtime.connect(minted["endpoint"], minted["token"])
        await bob.subscribe("room")
        ada_token = (await asyncio.to_thread(server.token, "ada"))["token"]
        async with sdk_stream(server.port, ada_token) as ada:
            hello = await ada.events.next_frame()
            assert hello is not None and hello["action"] == "connected"
            assert (await ada.request({"action": "subscribe", "channel": "room"}))["action"] == "ok"
            whisper_frame_ = {"action": "whisper", "channel": "room", "name": "typing", "data": 1, "ref": "w"}
            assert await ada.send(whisper_frame_) == 202
            until_reply = await ada.events.frames_until(lambda f: f.get("ref") == "w")
            assert [f["action"] for f in until_reply] == ["ok"]  # no whisper of its own before (or as) the reply
            whisper = await bob.next_event(5)
            assert (whisper["action"], whisper["connectionId"], whisper["data"]) == (
                "whisper",
                hello["connectionId"],
                1,
            )
            publish = {"action": "publish", "channel": "room", "name": "said", "exclude": hello["connectionId"]}
            assert await ada.send({**publish, "ref": "own"}) == 202
            assert (await bob.next_event(5))["serial"] == 1
            await asyncio.to_thread(server.publish, "room", "said", "all")
            # The stream got no whisper and no message of its own: the stand-in (before or after the publish's
            # reply), then the message for all.
            frames = await ada.events.frames_until(lambda f: f.get("serial") == 2 and f["action"] == "message")
            assert [(f["action"], f.get("serial")) for f in frames if f["action"] != "ok"] == [
                ("excluded", 1),
                ("message", 2),
            ]
            assert [f["serial"] for f in frames if f["action"] == "ok"] == [1]
        await bob.close()
