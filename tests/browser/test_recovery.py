"""Recovery in Chromium: a TCP proxy between the page and the server cuts the page's connection while messages
are published; after the page reconnects by itself it has every message once, in order (or, outside the
history window, its channel reports the discontinuity)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.servers import LiveServer, live_server
from tests.support.tcpproxy import CuttableProxy

pytestmark = [pytest.mark.browser, pytest.mark.slow]

COUNT = 100
RATE = 20  # messages per second while the connection is cut: 5 s


def setup_js(server: LiveServer, proxy: CuttableProxy, client_id: str) -> str:
    """JS that connects window.rt through the proxy and records messages, channel events and states."""
    token = json.dumps(server.token(client_id))
    return f"""async () => {{
      const t = {token};
      window.got = [];
      window.events = [];
      window.states = [];
      window.rt = new Pulse.Realtime({{ kbId: t.kbId, token: t.token, clientId: t.clientId,
        endpoint: 'ws://127.0.0.1:{proxy.port}/pulse/ws/', retryInitial: 200, retryMax: 1000 }});
      rt.connection.on((change) => states.push(change.current));
      const channel = rt.channels.get('feed');
      channel.on('resumed', (e) => events.push(['resumed', e]));
      channel.on('discontinuity', (e) => events.push(['discontinuity', e]));
      await channel.subscribe('tick', (m) => got.push([m.data.i, m.serial]));
      await channel.presence.enter({{ name: 'Alice' }});
      return rt.connection.id;
    }}"""


def cut_while_publishing(server: LiveServer, proxy: CuttableProxy, page: Any) -> str:
    """Deliver one message live, cut the page's connection, publish COUNT messages at RATE/s, restore."""
    connection_id: str = page.evaluate(setup_js(server, proxy, "alice"))
    server.publish("feed", "tick", {"i": -1})
    page.wait_for_function("() => got.length === 1")
    proxy.cut()
    page.wait_for_function("() => states.includes('disconnected')")
    started = time.monotonic()
    for i in range(COUNT):
        server.publish("feed", "tick", {"i": i})
        time.sleep(max(0.0, started + (i + 1) / RATE - time.monotonic()))
    assert page.evaluate("() => got.length") == 1  # nothing got through the cut
    proxy.restore()
    page.wait_for_function("() => states.filter((s) => s === 'connected').length === 2", timeout=20_000)
    return connection_id


def test_a_cut_connection_gets_every_missed_message_once_in_order(open_page: Callable[..., Any]) -> None:
    with live_server(pulse={"PRESENCE_GRACE": 30}) as server, CuttableProxy(server.port) as proxy:
        watcher = open_page(server)
        watcher.evaluate(f"""async () => {{
          const t = {json.dumps(server.token("watcher"))};
          window.rt = new Pulse.Realtime({{ kbId: t.kbId, token: t.token, endpoint: t.endpoint, clientId: 'watcher' }});
          window.changes = [];
          const presence = rt.channels.get('feed').presence;
          presence.subscribe('enter', (m) => changes.push(['enter', m.clientId]));
          presence.subscribe('leave', (m) => changes.push(['leave', m.clientId]));
          await presence.get();
        }}""")
        page = open_page(server)
        connection_id = cut_while_publishing(server, proxy, page)
        page.wait_for_function(f"() => got.length === {COUNT + 1}", timeout=20_000)
        page.wait_for_timeout(500)  # nothing more arrives
        got = page.evaluate("() => got")
        assert [i for i, _ in got] == [-1, *range(COUNT)]  # all of them, once each, in order
        assert [s for _, s in got] == list(range(1, COUNT + 2))
        assert page.evaluate("() => events") == [["resumed", {"channel": "feed", "serial": 1, "reason": "reconnected"}]]
        # The same connection continued: its presence member never left.
        assert page.evaluate("() => [rt.connection.id, rt.connection.recovered]") == [connection_id, True]
        assert proxy.accepted == 2
        watcher.wait_for_function("() => changes.length >= 1")
        watcher.wait_for_timeout(500)
        assert [c for c in watcher.evaluate("() => changes") if c[1] == "alice"] == [["enter", "alice"]]


def test_outside_the_history_window_the_channel_reports_a_discontinuity(open_page: Callable[..., Any]) -> None:
    with live_server(pulse={"HISTORY_SIZE": 20}) as server, CuttableProxy(server.port) as proxy:
        page = open_page(server)
        cut_while_publishing(server, proxy, page)
        page.wait_for_function("() => events.length === 1")
        event = page.evaluate("() => events[0]")
        assert event == [
            "discontinuity",
            {"channel": "feed", "reason": "reconnected", "lastSerial": 1, "serial": COUNT + 1},
        ]
        assert page.evaluate("() => got.length") == 1  # nothing replayed: the page reloads its state instead
        server.publish("feed", "tick", {"i": "live"})
        page.wait_for_function("() => got.length === 2")
        assert page.evaluate("() => got[1]") == ["live", COUNT + 2]


def test_rewind_and_history(open_page: Callable[..., Any]) -> None:
    with live_server() as server:
        for i in range(5):
            server.publish("log", "line", {"i": i})
        page = open_page(server)
        token = json.dumps(server.token("alice"))
        result = page.evaluate(f"""async () => {{
          const t = {token};
          window.rt = new Pulse.Realtime({{ kbId: t.kbId, token: t.token, endpoint: t.endpoint,
                                            clientId: t.clientId }});
          window.got = [];
          const channel = rt.channels.get('log', {{ rewind: 3 }});
          await channel.subscribe((m) => got.push(m.data.i));
          const page = await channel.history({{ limit: 2 }});
          const older = await channel.history({{ limit: 10, before: page[0].serial }});
          return {{ page: page.map((m) => [m.data.i, m.serial, m.name, m.channel]),
                   older: older.map((m) => m.serial) }};
        }}""")
        assert result["page"] == [[3, 4, "line", "log"], [4, 5, "line", "log"]]
        assert result["older"] == [1, 2, 3]
        server.publish("log", "line", {"i": 5})
        page.wait_for_function("() => got.length === 4")
        assert page.evaluate("() => got") == [2, 3, 4, 5]  # the three newest before the subscription, then live
