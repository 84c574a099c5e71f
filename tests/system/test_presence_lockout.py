"""Cheap identities cannot lock a channel's presence: the attack of a page's anonymous visitors, at the size it
broke (50 anonymous tokens x 20 sockets each entering a `{% pulse_presence %}` channel, 1,000 attempts, against
PRESENCE_MAX_MEMBERS 1,000), on one daphne with the library's defaults.

Before: the 1,000 anonymous members filled the channel and the next real visitor got presence_full. Now anonymous
members fill PRESENCE_MAX_ANONYMOUS_MEMBERS (200) slots of their own; a signed-in visitor still enters. The trade-off
(docs/presence.md): a later anonymous visitor is told presence_full, and watches the channel without being listed.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import re
import urllib.request
from typing import Any

import pytest

from django_pulse.clients.exceptions import PulseReplyError
from django_pulse.clients.websocket import Realtime
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.slow

VISITORS = 50
SOCKETS = 20  # PRESENCE_MAX_MEMBERS_PER_CLIENT: the most one identity may hold in a channel


class Visitor:
    """A browser without a login: its own cookies (session), the lobby page's signed stream and its token."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

    def arrive(self) -> tuple[str, str, str]:
        """Load the page and get a token as pulse.js does: (signed stream, token, client id)."""
        with self.opener.open(self.server.url + "/__test__/lobby/", timeout=10) as response:
            html = response.read().decode()
        stream = re.search(r'signed-stream-name="([^"]+)"', html)
        assert stream, html
        request = urllib.request.Request(self.server.url + "/pulse/token/anonymous/", data=b"{}", method="POST")
        request.add_header("Content-Type", "application/json")
        with self.opener.open(request, timeout=10) as response:
            token = json.loads(response.read())
        return stream.group(1), token["token"], token["clientId"]


async def enter(server: LiveServer, token: str, stream: str | None = None) -> tuple[Realtime, str | None]:
    """A connection entering the lobby's presence: (the connection, the error code or None)."""
    rt = await Realtime.connect(server.ws_url, token)
    members: dict[str, Any] = {"channel": "lobby"}
    if stream is not None:
        members["stream"] = stream
    try:
        await rt.request("subscribe", **members)
        await rt.request("presence.enter", **members)
    except PulseReplyError as exc:
        return rt, exc.code
    return rt, None


async def test_fifty_anonymous_identities_do_not_lock_out_a_signed_in_visitor() -> None:
    with live_server() as server:
        arrivals = [await asyncio.to_thread(Visitor(server).arrive) for _ in range(VISITORS)]
        assert len({client_id for _, _, client_id in arrivals}) == VISITORS
        connections: list[Realtime] = []
        refused: list[str | None] = []
        try:
            for stream, token, _ in arrivals:
                results = await asyncio.gather(*(enter(server, token, stream) for _ in range(SOCKETS)))
                connections += [rt for rt, _ in results]
                refused += [code for _, code in results if code is not None]
            assert len(connections) == VISITORS * SOCKETS
            assert len(refused) == VISITORS * SOCKETS - 200  # PRESENCE_MAX_ANONYMOUS_MEMBERS entered
            assert set(refused) == {"presence_full"}

            # The next real visitor, signed in, enters.
            alice = await asyncio.to_thread(server.token, "alice")
            rt, code = await enter(server, alice["token"])
            connections.append(rt)
            assert code is None
            members = await rt.request("presence.get", channel="lobby")
            listed = members.get("members", members.get("data", {}).get("members", []))
            assert "alice" in {m["clientId"] for m in listed}
            assert sum(not m["clientId"].startswith("anon-") for m in listed) == 1

            # The trade-off: another anonymous visitor is told so, and still watches the channel.
            stream, token, _ = await asyncio.to_thread(Visitor(server).arrive)
            late, code = await enter(server, token, stream)
            connections.append(late)
            assert code == "presence_full"
            await asyncio.to_thread(server.publish, "lobby", "said", "hi")
            event = await late.next_event(timeout=10)
            while event.get("action") != "message":
                event = await late.next_event(timeout=10)
            assert event["data"] == "hi"
        finally:
            await asyncio.gather(*(rt.close() for rt in connections), return_exceptions=True)


async def test_a_visitors_presence_stream_does_not_open_presence_for_another_identity() -> None:
    """The page fetched once cannot be replayed with many anonymous tokens: its stream is bound to its visitor."""
    with live_server() as server:
        stream, token, _ = await asyncio.to_thread(Visitor(server).arrive)
        other = Visitor(server)
        _, other_token, _ = await asyncio.to_thread(other.arrive)
        rt, code = await enter(server, other_token, stream)
        await rt.close()
        assert code == "forbidden"
        rt, code = await enter(server, token, stream)
        await rt.close()
        assert code is None
