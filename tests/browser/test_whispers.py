"""Whispers and others-only publishes in real Chromium: the chat recipe of docs/recipes.md, run as
written, shows "ada is typing" to bob and never to ada, and keeps it out of history; a publish for the others
only reaches the user's other tab and not the tab that sent it, also across a reconnect of that tab."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.docsnippets import blocks
from tests.support.servers import LiveServer, live_server
from tests.support.tcpproxy import CuttableProxy

pytestmark = pytest.mark.browser

CHAT = {"chat.*": ["subscribe", "publish", "presence", "history", "whisper"]}


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with live_server() as live:
        yield live


# What reached the page over the wire, before the SDK looked at it (the SDK also drops what it was not meant to
# get, so the tests check the server's side too).
RECORD_FRAMES = """(rt) => {
  window.raw = [];
  const onFrame = rt.connection._onFrame;
  rt.connection._onFrame = function (text) { raw.push(JSON.parse(text)); return onFrame.call(this, text); };
}"""


def chat_recipe() -> str:
    (code,) = [code for _, code in blocks("recipes.md", "javascript") if "listenForWhisper" in code]
    return code


def chat_tab(open_page: Callable[..., Any], server: LiveServer, client_id: str, transport: str = "websocket") -> Any:
    """A tab of ``client_id`` running the recipe's code as written, with the page pieces it expects: the form and
    its input, ``addLine`` (records lines) and ``showTyping`` (the indicator; records every time it shows)."""
    page = open_page(server)
    t = json.dumps(server.token(client_id, capabilities=CHAT))
    page.evaluate(
        f"""() => {{
          const t = {t};
          document.body.innerHTML = '<form id="form"><input id="input" autocomplete="off"></form>' +
            '<p id="typing"></p><ul id="lines"></ul>';
          window.input = document.getElementById('input');
          window.form = document.getElementById('form');
          window.lines = [];
          window.shown = [];
          window.addLine = (who, text) => {{
            lines.push([who, text]);
            const li = document.createElement('li');
            li.textContent = who + ': ' + text;
            document.getElementById('lines').append(li);
          }};
          window.showTyping = (who, on) => {{
            if (on) shown.push(who);
            document.getElementById('typing').textContent = on ? who + ' is typing…' : '';
          }};
          window.realtime = new Pulse.Realtime({{ kbId: t.kbId, token: t.token, endpoint: t.endpoint,
                                                  clientId: t.clientId, transports: ['{transport}'] }});
          ({RECORD_FRAMES})(realtime);
        }}"""
    )
    page.add_script_tag(content=chat_recipe())
    page.wait_for_function("() => room.state === 'attached' && realtime.connection.state === 'connected'")
    assert page.evaluate("() => realtime.connection._ws.transport || 'websocket'") == transport
    return page


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_a_typing_indicator_is_shown_to_the_other_user_only_and_never_stored(
    server: LiveServer, open_page: Callable[..., Any], transport: str
) -> None:
    ada = chat_tab(open_page, server, "ada", transport)
    bob = chat_tab(open_page, server, "bob")
    ada.type("#input", "hello bob", delay=20)
    bob.wait_for_function("() => document.getElementById('typing').textContent === 'ada is typing…'")
    ada.press("#input", "Enter")
    # Bob gets the line and the indicator goes; ada shows her own line once (published for the others only).
    bob.wait_for_function("() => lines.length === 1")
    assert bob.evaluate("() => lines") == [["ada", "hello bob"]]
    assert bob.evaluate("() => document.getElementById('typing').textContent") == ""
    bob.type("#input", "hi", delay=20)
    ada.wait_for_function("() => shown.includes('bob')")
    ada.wait_for_timeout(300)
    assert ada.evaluate("() => shown") == ["bob"]  # her own typing was never shown to her
    assert ada.evaluate("() => lines") == [["me", "hello bob"]]
    ada_got = ada.evaluate("() => raw.filter((f) => f.action === 'whisper' || f.action === 'message')")
    assert {(f["action"], f["clientId"]) for f in ada_got} == {("whisper", "bob")}  # nothing of her own came back
    assert ada.evaluate("() => raw.filter((f) => f.action === 'excluded').map((f) => f.serial)") == [1]
    assert bob.evaluate("() => shown") and set(bob.evaluate("() => shown")) == {"ada"}
    # Never in history, and no serial: the channel's one message is the line (serial 1), on both tabs.
    history = bob.evaluate("async () => (await room.history()).map((m) => [m.name, m.serial, m.data])")
    assert history == [["said", 1, {"text": "hello bob"}]]
    assert [tab.evaluate("() => room.serial") for tab in (ada, bob)] == [1, 1]
    # A token without the whisper capability is refused (tokens cannot whisper by default).
    refused = bob.evaluate(
        f"""async () => {{
          const t = {json.dumps(server.token("cy", capabilities={"chat.*": ["subscribe", "publish"]}))};
          const rt = new Pulse.Realtime({{ kbId: t.kbId, token: t.token, endpoint: t.endpoint, clientId: 'cy' }});
          await new Promise((resolve) => rt.connection.once('connected', resolve));
          try {{ await rt.channels.get('chat.lobby').whisper('typing', {{ typing: true }}); return 'sent'; }}
          catch (e) {{ return e.code; }} finally {{ rt.close(); }}
        }}"""
    )
    assert refused == "forbidden"


def tab_of(open_page: Callable[..., Any], server: LiveServer, client_id: str, endpoint: str | None = None) -> Any:
    page = open_page(server)
    t = json.dumps(server.token(client_id))
    page.evaluate(
        f"""async () => {{
          const t = {t};
          window.got = [];
          window.events = [];
          window.states = [];
          window.rt = new Pulse.Realtime({{ kbId: t.kbId, token: t.token, clientId: t.clientId,
            endpoint: {json.dumps(endpoint)} || t.endpoint, retryInitial: 200, retryMax: 1000 }});
          ({RECORD_FRAMES})(rt);
          rt.connection.on((change) => states.push(change.current));
          window.channel = rt.channels.get('feed');
          channel.on('resumed', (e) => events.push(['resumed', e.serial]));
          channel.on('discontinuity', (e) => events.push(['discontinuity', e.reason]));
          await channel.subscribe((m) => got.push([m.data, m.serial]));
        }}"""
    )
    return page


def test_a_publish_for_the_others_skips_the_tab_that_sent_it(open_page: Callable[..., Any]) -> None:
    with live_server(pulse={"PRESENCE_GRACE": 30}) as server, CuttableProxy(server.port) as proxy:
        sender = tab_of(open_page, server, "ada", endpoint=f"ws://127.0.0.1:{proxy.port}/pulse/ws/")
        other = tab_of(open_page, server, "ada")  # the same user's other tab
        result = sender.evaluate("() => channel.publish('said', 'from tab 1', { toOthers: true })")
        assert result["serial"] == 1
        other.wait_for_function("() => got.length === 1")
        assert other.evaluate("() => got") == [["from tab 1", 1]]
        # The page's own request publishes through the server excluding the tab's connection (Echo's toOthers).
        connection_id = sender.evaluate("() => rt.connection.id")
        server.publish("feed", "said", "from the server, not for tab 1", exclude=connection_id)
        other.wait_for_function("() => got.length === 2")
        server.publish("feed", "said", "for everyone")
        sender.wait_for_function("() => got.length === 1")
        assert sender.evaluate("() => got") == [["for everyone", 3]]
        assert sender.evaluate("() => channel.serial") == 3

        # The sender's connection drops; meanwhile one message excludes it and one does not. It reconnects and
        # resumes: the one for everyone arrives, its own never does, and nothing counts as a gap.
        proxy.cut()
        sender.wait_for_function("() => states.includes('disconnected')")
        server.publish("feed", "said", "while away, not for tab 1", exclude=connection_id)
        server.publish("feed", "said", "while away, for everyone")
        proxy.restore()
        sender.wait_for_function("() => got.length === 2", timeout=20_000)
        sender.wait_for_timeout(500)
        assert sender.evaluate("() => got") == [["for everyone", 3], ["while away, for everyone", 5]]
        assert sender.evaluate("() => [rt.connection.id, rt.connection.recovered]") == [connection_id, True]
        assert sender.evaluate("() => events") == [["resumed", 3]]
        # A publish for the others queued while disconnected excludes the connection it is finally sent on.
        proxy.cut()
        sender.wait_for_function("() => states.filter((s) => s === 'disconnected').length === 2")
        sender.evaluate("() => { window.pending = channel.publish('said', 'queued, for others', {toOthers: true}); }")
        proxy.restore()
        assert sender.evaluate("() => pending.then((r) => r.serial)") == 6
        other.wait_for_function("() => got.length === 6")
        assert [data for data, _ in other.evaluate("() => got")] == [
            "from tab 1",
            "from the server, not for tab 1",
            "for everyone",
            "while away, not for tab 1",
            "while away, for everyone",
            "queued, for others",
        ]
        sender.wait_for_timeout(300)
        assert sender.evaluate("() => [got.length, channel.serial]") == [2, 6]
        # Over the wire: the two messages for everyone, and a stand-in in place of each of the other four.
        wire = sender.evaluate("() => raw.filter((f) => f.action === 'message' || f.action === 'excluded')")
        assert [(f["action"], f["serial"]) for f in wire] == [
            ("excluded", 1),
            ("excluded", 2),
            ("message", 3),
            ("excluded", 4),
            ("message", 5),
            ("excluded", 6),
        ]
