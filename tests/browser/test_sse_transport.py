"""pulse.js over the SSE transport in real Chromium (docs/transports.md): WebSockets blocked in the page (its
WebSocket constructor fails) and, separately, by a proxy that refuses the upgrade; the seed's unchanged page
and the example's `/` work through SSE; an SSE tab and a WebSocket tab on two processes see each other; a cut
stream recovers exactly what it missed."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.servers import LiveServer, example_server, free_port, live_pair, live_server
from tests.support.tcpproxy import CuttableProxy

pytestmark = pytest.mark.browser

# Installed before the page's scripts: the page cannot open WebSockets (as behind a proxy that drops them).
BLOCK_WEBSOCKET = """
window.WebSocket = function () { throw new Error('WebSockets are blocked here'); };
"""


@pytest.fixture
def server() -> Iterator[LiveServer]:
    with live_server() as live:
        yield live


def online(page: Any, count: int, timeout: int = 15_000) -> None:
    page.wait_for_function(
        "(n) => document.getElementById('online').textContent === 'Online: ' + n", arg=count, timeout=timeout
    )


def transport_of(page: Any) -> str:
    return str(page.evaluate("() => window.__pulseTransport"))


# The seed's page keeps its Realtime in a closure; this records the transport of every Realtime the page makes.
RECORD_TRANSPORT = """
(() => {
  const install = () => {
    if (!window.Pulse || window.Pulse.__recorded) return false;
    const Original = window.Pulse.Realtime;
    window.Pulse.Realtime = class extends Original {
      constructor(options) {
        super(options);
        window.__realtime = this;
        this.connection.on('connected', () => { window.__pulseTransport = this._transports.current; });
      }
    };
    window.Pulse.__recorded = true;
    return true;
  };
  Object.defineProperty(window, 'Pulse', {
    configurable: true,
    set(value) { delete window.Pulse; window.Pulse = value; install(); },
    get() { return undefined; },
  });
})();
"""


def test_seed_page_works_through_sse_when_the_websocket_constructor_fails(server: LiveServer, context: Any) -> None:
    context.add_init_script(BLOCK_WEBSOCKET)
    context.add_init_script(RECORD_TRANSPORT)
    first = context.new_page()
    first.goto(server.url + "/__test__/seed/")
    online(first, 1)
    second = context.new_page()
    second.goto(server.url + "/__test__/seed/")
    for tab in (first, second):
        online(tab, 2)
        assert transport_of(tab) == "sse"
    first.fill("#content", "hello over sse")
    first.click("button[type=submit]")
    for tab in (first, second):
        tab.wait_for_function("() => document.getElementById('posts').textContent.includes('hello over sse')")
    server.post("/posts", {"action": "create", "content": "from the server", "userName": "ops"})
    for tab in (first, second):
        tab.wait_for_function("() => document.getElementById('posts').textContent.includes('from the server')")
    # Closing the tab: the page's close POST (keepalive) ends its stream cleanly; its member leaves at once.
    second.close()
    online(first, 1, timeout=5_000)


class NoUpgradeProxy:
    """A loopback HTTP proxy that forwards plain HTTP but answers every WebSocket upgrade with 403, as some
    corporate proxies do. Each connection's first request head is inspected (browsers give WebSockets their
    own connections)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.refused = 0
        self._transports: set[asyncio.BaseTransport] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> NoUpgradeProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self._loop
        ).result(5)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            for transport in list(self._transports):
                transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._transports.add(writer.transport)
        try:
            await self._serve(reader, writer)
        finally:
            writer.transport.abort()
            self._transports.discard(writer.transport)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return
        if b"upgrade: websocket" in head.lower():
            self.refused += 1
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._transports.add(up_writer.transport)
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        finally:
            up_writer.transport.abort()
            self._transports.discard(up_writer.transport)


def test_example_home_page_works_through_a_proxy_that_refuses_websockets(context: Any) -> None:
    context.add_init_script(RECORD_TRANSPORT)
    with example_server() as server, NoUpgradeProxy(server.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}/"
        first = context.new_page()
        first.goto(url)
        second = context.new_page()
        second.goto(url)
        for page in (first, second):
            page.locator("#online").filter(has_text="Online: 2").wait_for()
            assert transport_of(page) == "sse"
            # The fallback is remembered for the session: later connections go straight to SSE.
            assert page.evaluate("() => Object.keys(sessionStorage).some((k) => k.startsWith('pulse.transport'))")
        assert proxy.refused >= 1
        mark = secrets.token_hex(3)
        first.fill("#content", f"through the proxy {mark}")
        first.click("button[type=submit]")
        second.locator("#posts .post p", has_text=f"through the proxy {mark}").first.wait_for()
        second.close()
        first.locator("#online").filter(has_text="Online: 1").wait_for(timeout=5_000)


def test_an_sse_tab_and_a_websocket_tab_on_two_processes_see_each_other(
    redis_url: str, redis_prefix: str, context: Any, browser: Any
) -> None:
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (a, b):
        sse_tab = context.new_page()
        sse_tab.add_init_script(BLOCK_WEBSOCKET)
        sse_tab.goto(a.url + "/__test__/page/")
        ws_context = browser.new_context()
        try:
            ws_tab = ws_context.new_page()
            ws_tab.goto(b.url + "/__test__/page/")
            script = """(t) => {
              window.got = [];
              window.rt = new Pulse.Realtime({ token: t, clientId: t.clientId });
              const ch = rt.channels.get('room');
              ch.subscribe((m) => got.push(m.data));
              ch.presence.enter({ name: t.clientId });
              window.members = () => ch.presence.get().then((ms) => ms.map((m) => m.clientId).sort());
              return new Promise((ok) => rt.connection.on('connected', () => ok(rt._transports.current)));
            }"""
            assert sse_tab.evaluate(script, a.token("sse-user")) == "sse"
            assert ws_tab.evaluate(script, b.token("ws-user")) == "websocket"
            for tab in (sse_tab, ws_tab):
                tab.wait_for_function(
                    "() => members().then((m) => JSON.stringify(m) === JSON.stringify(['sse-user', 'ws-user']))"
                )
            for i in range(5):
                sse_tab.evaluate("(i) => rt.channels.get('room').publish('say', 'sse ' + i)", i)
                ws_tab.evaluate("(i) => rt.channels.get('room').publish('say', 'ws ' + i)", i)
            for tab in (sse_tab, ws_tab):
                tab.wait_for_function("() => got.length === 10")
            # One order, the channel's serial order, in both tabs.
            assert sse_tab.evaluate("() => got") == ws_tab.evaluate("() => got")
            assert sorted(sse_tab.evaluate("() => got")) == sorted(
                [f"sse {i}" for i in range(5)] + [f"ws {i}" for i in range(5)]
            )
            ws_tab.close()
            sse_tab.wait_for_function("() => members().then((m) => JSON.stringify(m) === JSON.stringify(['sse-user']))")
        finally:
            ws_context.close()


def test_a_cut_sse_stream_gets_exactly_what_it_missed_after_the_network_returns(
    server: LiveServer, context: Any
) -> None:
    with CuttableProxy(server.port) as proxy:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{proxy.port}/__test__/page/")
        token = server.token("alice")
        token["endpoint"] = f"ws://127.0.0.1:{proxy.port}/pulse/ws/"
        page.evaluate(
            """(t) => {
              window.got = [];
              window.rt = new Pulse.Realtime({ token: t, transports: ['sse'], retryInitial: 200, retryMax: 500 });
              rt.channels.get('feed').subscribe((m) => got.push(m.serial));
            }""",
            token,
        )
        page.wait_for_function("() => rt.channels.get('feed').state === 'attached'")
        server.publish("feed", "n", 0)
        page.wait_for_function("() => got.length === 1")
        proxy.cut()
        page.wait_for_function("() => rt.connection.state !== 'connected'")
        for i in range(1, 11):
            server.publish("feed", "n", i)
        proxy.restore()
        page.wait_for_function("() => got.length >= 11 && rt.connection.state === 'connected'")
        server.publish("feed", "n", 11)
        page.wait_for_function("() => got.length >= 12")
        assert page.evaluate("() => got") == list(range(1, 13))
        assert page.evaluate("() => rt._transports.current") == "sse"


def test_a_plain_event_source_resumes_with_last_event_id_after_a_cut(server: LiveServer, context: Any) -> None:
    """No SDK: a page's own EventSource on a signed stream; the browser reconnects by itself and its
    Last-Event-ID brings exactly the missed messages, once, in order."""
    from django_pulse.streams import sign_stream

    with CuttableProxy(server.port) as proxy:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{proxy.port}/__test__/page/")
        page.evaluate(
            """(stream) => {
              window.got = [];
              window.opens = 0;
              window.source = new EventSource('/pulse/sse/?stream=' + encodeURIComponent(stream));
              source.onopen = () => { opens += 1; };
              source.addEventListener('tick', (event) => got.push(Number(event.data)));
            }""",
            sign_stream("ticks"),
        )
        page.wait_for_function("() => opens === 1")
        server.publish("ticks", "tick", "0")
        page.wait_for_function("() => got.length === 1")
        proxy.cut()
        for i in range(1, 11):
            server.publish("ticks", "tick", str(i))
        proxy.restore()
        page.wait_for_function("() => opens >= 2 && got.length >= 11", timeout=20_000)
        server.publish("ticks", "tick", "11")
        page.wait_for_function("() => got.length >= 12")
        assert page.evaluate("() => got") == list(range(12))


def test_a_connection_on_sse_moves_back_to_websocket_once_websockets_work(server: LiveServer, context: Any) -> None:
    context.add_init_script(
        """
        window.__blockWS = true;
        const RealWebSocket = window.WebSocket;
        window.WebSocket = function (url, protocols) {
          if (window.__blockWS) throw new Error('WebSockets are blocked here');
          return new RealWebSocket(url, protocols);
        };
        """
    )
    page = context.new_page()
    page.goto(server.url + "/__test__/page/")
    page.evaluate(
        """(t) => {
          window.got = [];
          window.rt = new Pulse.Realtime({ token: t, websocketRetry: 2000 });
          const ch = rt.channels.get('up');
          ch.subscribe((m) => got.push(m.data));
          ch.presence.enter({ here: true });
          window.transports = [];
          rt.connection.on('connected', () => transports.push(rt._transports.current));
        }""",
        server.token("mover"),
    )
    page.wait_for_function("() => transports.length === 1 && rt.channels.get('up').state === 'attached'")
    assert page.evaluate("() => transports") == ["sse"]
    connection_id = page.evaluate("() => rt.connection.id")
    server.publish("up", "n", 1)
    page.wait_for_function("() => got.length === 1")
    page.evaluate("() => { window.__blockWS = false; }")
    page.wait_for_function(
        "() => transports.length === 2 && rt.channels.get('up').state === 'attached'", timeout=20_000
    )
    assert page.evaluate("() => transports") == ["sse", "websocket"]
    assert page.evaluate("() => rt.connection.id") == connection_id  # the same connection, continued
    server.publish("up", "n", 2)
    page.wait_for_function("() => got.length === 2")
    assert page.evaluate("() => got") == [1, 2]
    members = page.evaluate("() => rt.channels.get('up').presence.get()")
    assert [m["clientId"] for m in members] == ["mover"]
