"""pulse.js through a Redis outage, on a page with no discontinuity handler: a real daphne on Redis through a TCP
proxy, a publisher at 50 messages/s over the HTTP API, Redis cut for 2 s, and the server's subscriber connection
held back 1.5 s when it comes back (publishing works again first, as in a failover), so the process misses
messages live and sends its subscribers a ``discontinuity``.

What a user sees: the channel resumes by itself; the page gets every acknowledged message exactly once and in
order and hears `resumed`, never `discontinuity`. A raw WebSocket in the same page shows the gap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.failover import Publishers, check_outage_delivery
from tests.support.servers import LiveServer, live_server
from tests.support.tcpproxy import CuttableProxy

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def setup_js(server: LiveServer) -> str:
    """window.rt subscribed with no discontinuity handler (its events recorded only to assert on), and
    window.raw: a plain WebSocket subscriber that records the frames it is sent."""
    reader, witness = json.dumps(server.token("reader")), json.dumps(server.token("witness"))
    return f"""async () => {{
      const t = {reader}, w = {witness};
      window.got = [];
      window.events = [];
      window.rawFrames = [];
      window.rt = new Pulse.Realtime({{ kbId: t.kbId, token: t.token, clientId: t.clientId, endpoint: t.endpoint }});
      const channel = rt.channels.get('feed');
      channel.on('resumed', (e) => events.push(['resumed', e]));
      await channel.subscribe((m) => got.push([m.id, m.serial]));
      // Recording `discontinuity` would be a handler; the state of the emitter after the test tells instead.
      window.raw = new WebSocket(w.endpoint);
      await new Promise((resolve) => {{
        raw.onopen = () => raw.send(JSON.stringify({{ action: 'auth', token: w.token }}));
        raw.onmessage = (event) => {{
          const frame = JSON.parse(event.data);
          const subscribe = {{ action: 'subscribe', channel: 'feed', ref: 1 }};
          if (frame.action === 'connected') raw.send(JSON.stringify(subscribe));
          else if (frame.action === 'ok') resolve();
          else rawFrames.push(frame);
        }};
      }});
    }}"""


def test_a_page_without_a_discontinuity_handler_gets_every_acknowledged_message(
    open_page: Callable[..., Any], redis_url: str, redis_prefix: str
) -> None:
    parts = urlsplit(redis_url)
    with (
        CuttableProxy(parts.port or 6379) as proxy,
        live_server(redis_url=f"redis://127.0.0.1:{proxy.port}{parts.path}", redis_prefix=redis_prefix) as server,
    ):
        page = open_page(server)
        page.evaluate(setup_js(server))
        emit = page.evaluate("""() => {
          // Count what reaches the channel's emitter: no listener, but a discontinuity would be emitted here.
          window.emitted = [];
          const channel = rt.channels.get('feed');
          const original = channel.emit.bind(channel);
          channel.emit = (event, ...args) => { emitted.push(event); return original(event, ...args); };
          return typeof channel.emit;
        }""")
        assert emit == "function"
        publishers = Publishers(server, ["feed"], rate=50)
        try:
            time.sleep(1.0)
            proxy.hold_next(b"SUBSCRIBE", 1.5)
            proxy.cut()
            time.sleep(2.0)
            proxy.restore()
            time.sleep(4.0)  # the subscriber connection back, the resume, live again
        finally:
            publishers.stop()
        acknowledged = publishers.acknowledged["feed"]
        page.wait_for_function(
            "(ids) => { const have = new Set(got.map((g) => g[0])); return ids.every((i) => have.has(i)); }",
            arg=acknowledged,
            timeout=15_000,
        )
        page.wait_for_timeout(300)  # nothing more arrives
        got = page.evaluate("() => got")
        events = page.evaluate("() => events")
        emitted = page.evaluate("() => emitted")
        raw = page.evaluate("() => rawFrames")

    assert proxy.held == 1
    serials = [s for _, s in got]
    summary = check_outage_delivery(publishers, "feed", raw, [i for i, _ in got], serials, f"events {events}")
    assert [e[0] for e in events] == ["resumed"], summary
    assert events[0][1]["reason"] == "broker_unavailable"
    assert events[0][1]["serial"] in serials[:-1]  # the replay continued from a message the page had
    assert "discontinuity" not in emitted, emitted
