from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from django_pulse import pulse
from tests.wsutil import connect

pytestmark = pytest.mark.django_db(transaction=True)


async def test_vertical_slice() -> None:
    alice = await connect("alice")
    assert alice.connected["clientId"] == "alice"
    reply = await alice.request("subscribe", channel="posts")
    assert reply["action"] == "ok" and reply["serial"] == 0
    mid = await pulse.apublish("posts", "new_post", {"a": 1})
    frame = await alice.recv()
    assert frame["id"] == mid and frame["serial"] == 1 and frame["data"] == {"a": 1}
    await sync_to_async(pulse.publish)("posts", "x", {"b": 2})
    frame = await alice.recv()
    assert frame["serial"] == 2 and frame["name"] == "x"
    await alice.close()
