"""Signed stream names on the WebSocket: a ``stream`` member on a request grants exactly what the page was
rendered for (subscribe, history, presence read; presence enter with the server's data), whatever the
token's capabilities; a forged, foreign or unbound stream is refused; authorize hooks still decide."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from django_pulse import pulse
from django_pulse.authorization import clear_hooks
from django_pulse.streams import sign_stream
from tests.support.wsutil import Client, connect

NOTHING: dict[str, list[str]] = {}  # the anonymous live-page token: no capability of its own


@pytest.fixture(autouse=True)
def _no_hooks() -> Iterator[None]:
    from django_pulse import authorization

    saved = list(authorization._hooks)
    clear_hooks()
    yield
    authorization._hooks[:] = saved


async def anonymous() -> Client:
    return await connect("anon-AAAAAAAAAAAAAAAA", capabilities=NOTHING)


@pytest.mark.django_db(transaction=True)
async def test_a_signed_stream_opens_exactly_its_channel() -> None:
    client = await anonymous()
    refused = await client.request("subscribe", channel="posts")
    assert refused["action"] == "error" and refused["code"] == "forbidden"
    ok = await client.request("subscribe", channel="posts", stream=sign_stream("posts"))
    assert ok["action"] == "ok"
    await sync_to_async(pulse.publish_html)("posts", action="remove", target="post-1")
    frame = await client.recv()
    assert frame["action"] == "message" and frame["name"] == "pulse:html"
    assert frame["data"] == {"action": "remove", "target": "post-1"}
    # The grant covers history and presence reads of that channel, and nothing else.
    assert (await client.request("history", channel="posts"))["action"] == "ok"
    assert (await client.request("presence.get", channel="posts"))["action"] == "ok"
    assert (await client.request("presence.enter", channel="posts", data={"name": "me"}))["code"] == "forbidden"
    assert (await client.request("publish", channel="posts", name="x", data=1))["code"] == "forbidden"
    assert (await client.request("subscribe", channel="other"))["code"] == "forbidden"
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_forged_foreign_and_misused_streams_are_refused() -> None:
    client = await anonymous()
    value = sign_stream("posts")
    payload, signature = value.split(":", 1)
    forged = ("A" if payload[0] != "A" else "B") + payload[1:] + ":" + signature
    for stream, channel in [
        (forged, "posts"),
        (value[:-3], "posts"),
        (12, "posts"),
        (value, "other"),  # a stream for posts does not open another channel
        (sign_stream("posts", kb_id="another-app"), "posts"),
        (sign_stream("posts", client_id="someone-else"), "posts"),
    ]:
        reply = await client.request("subscribe", channel=channel, stream=stream)
        assert reply["action"] == "error" and reply["code"] == "forbidden", (stream, channel, reply)
    assert (await client.request("subscribe", channel="other"))["code"] == "forbidden"
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_a_bound_stream_works_for_its_client() -> None:
    client = await connect("7", capabilities=NOTHING)
    reply = await client.request("subscribe", channel="orders.7", stream=sign_stream("orders.7", client_id="7"))
    assert reply["action"] == "ok"
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_a_stream_opens_a_private_channel_but_hooks_still_decide() -> None:
    client = await connect("alice")  # default capabilities: "*" does not open private- channels
    assert (await client.request("subscribe", channel="private-a"))["code"] == "forbidden"
    assert (await client.request("subscribe", channel="private-a", stream=sign_stream("private-a")))["action"] == "ok"

    calls: list[tuple[Any, str]] = []

    @pulse.authorize("rooms.{room}")
    def rooms(user: Any, room: str) -> bool:
        calls.append((user, room))
        return room == "open"

    assert (await client.request("subscribe", channel="rooms.open", stream=sign_stream("rooms.open")))["action"] == "ok"
    shut = await client.request("subscribe", channel="rooms.shut", stream=sign_stream("rooms.shut"))
    assert shut["code"] == "forbidden"
    assert [room for _, room in calls] == ["open", "shut"]
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_presence_enters_with_the_data_signed_into_the_page() -> None:
    client = await anonymous()
    stream = sign_stream("posts", presence={"name": "Ada"})
    reply = await client.request("presence.enter", channel="posts", stream=stream, data={"name": "Mallory"})
    assert reply["action"] == "ok" and reply["member"]["data"] == {"name": "Ada"}
    # A later plain stream of the channel (the page's stream element) keeps the presence grant.
    assert (await client.request("subscribe", channel="posts", stream=sign_stream("posts")))["action"] == "ok"
    updated = await client.request("presence.update", channel="posts", data={"name": "Mallory"})
    assert updated["member"]["data"] == {"name": "Ada"}
    members = (await sync_to_async(pulse.presence)("posts"))["members"]
    assert [m["data"] for m in members] == [{"name": "Ada"}]
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_resume_from_the_rendered_position_replays_what_was_published_since() -> None:
    await sync_to_async(pulse.publish)("posts", "e", 1)
    serial, epoch = await sync_to_async(pulse.stream_position)("posts")  # the page renders here
    await sync_to_async(pulse.publish)("posts", "e", 2)  # published before the browser subscribes
    client = await anonymous()
    reply = await client.request(
        "subscribe", channel="posts", stream=sign_stream("posts"), resume={"serial": serial, "epoch": epoch}
    )
    assert reply["resumed"] is True
    frame = await client.recv()
    assert (frame["data"], frame["serial"]) == (2, 2)
    await client.close()
