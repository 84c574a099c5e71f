"""Presence per user in real Chromium: a user's two tabs are two members but one user; "joined" fires
when their first tab enters and "left" when their last leaves, once per user; the seed's per-member events are
unchanged; the server SDK groups the same way."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.browser


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with live_server() as live:
        yield live


def tab(open_page: Callable[..., Any], server: LiveServer, client_id: str) -> Any:
    page = open_page(server)
    t = json.dumps(server.token(client_id))
    page.evaluate(
        f"""() => {{
          const t = {t};
          window.rt = new Pulse.Realtime(
            {{ kbId: t.kbId, token: t.token, endpoint: t.endpoint, clientId: t.clientId }});
          window.room = rt.channels.get('room');
        }}"""
    )
    return page


def enter(page: Any, name: str) -> None:
    page.evaluate("(name) => room.presence.enter({ name })", name)


def wait_events(page: Any, count: int) -> list[list[Any]]:
    page.wait_for_function("(n) => window.userEvents.length >= n", arg=count)
    events: list[list[Any]] = page.evaluate("() => userEvents")
    return events


def test_joined_and_left_fire_once_per_user_across_two_tabs(server: LiveServer, open_page: Callable[..., Any]) -> None:
    watcher = tab(open_page, server, "watcher")
    watcher.evaluate(
        """() => {
          window.userEvents = [];
          window.memberEvents = [];
          for (const e of ['joined', 'left', 'updated']) {
            room.presence.subscribeUsers(e, (u) => userEvents.push([e, u.clientId, u.data.name, u.connections.length]));
          }
          room.presence.subscribe((members) => {});
          room.presence.subscribe(['enter', 'leave'], (m) => memberEvents.push(m.clientId));
          return room.presence.subscribeUsers(() => {});
        }"""
    )
    alice_1 = tab(open_page, server, "alice")
    enter(alice_1, "Alice (tab 1)")
    assert wait_events(watcher, 1) == [["joined", "alice", "Alice (tab 1)", 1]]
    alice_2 = tab(open_page, server, "alice")
    enter(alice_2, "Alice (tab 2)")
    # The second tab is an update of Alice (two connections; the first tab's data represents her).
    assert wait_events(watcher, 2)[1] == ["updated", "alice", "Alice (tab 1)", 2]
    bob = tab(open_page, server, "bob")
    enter(bob, "Bob")
    assert wait_events(watcher, 3)[2] == ["joined", "bob", "Bob", 1]

    users = server_users(server)
    assert [(u["clientId"], u["data"], u["connections"]) for u in users] == [
        ("alice", {"name": "Alice (tab 1)"}, 2),
        ("bob", {"name": "Bob"}, 1),
    ]
    assert watcher.evaluate("() => room.presence.users().map((u) => [u.clientId, u.connections.length])") == [
        ["alice", 2],
        ["bob", 1],
    ]

    alice_1.evaluate("() => room.presence.leave()")
    assert wait_events(watcher, 4)[3] == ["updated", "alice", "Alice (tab 2)", 1]
    alice_2.close()  # the last tab goes: Alice leaves (pulse.js closes cleanly on pagehide)
    assert wait_events(watcher, 5)[4] == ["left", "alice", "Alice (tab 2)", 1]

    events = watcher.evaluate("() => userEvents")
    assert [e[:2] for e in events if e[0] in ("joined", "left")] == [
        ["joined", "alice"],
        ["joined", "bob"],
        ["left", "alice"],
    ]
    # The seed's per-member events are unchanged: one enter and one leave per tab.
    watcher.wait_for_function("() => memberEvents.length === 5")
    assert sorted(watcher.evaluate("() => memberEvents")) == ["alice", "alice", "alice", "alice", "bob"]


def server_users(server: LiveServer) -> list[dict[str, Any]]:
    answer = server.post("/__test__/presence-users/", {"channel": "room"})
    users: list[dict[str, Any]] = answer["users"]
    return users
