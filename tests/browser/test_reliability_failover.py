"""Failover in a real browser: two daphne processes share Redis behind a TCP "load balancer"; the process
serving five pulse.js clients is killed (SIGKILL). The clients reconnect through the SDK's backoff to the
survivor, are subscribed and present again (resuming their connection ids); after the survivor's sweep of the dead
process exactly those five members are listed, none twice, none lost."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.servers import LiveServer, free_port, live_pair

pytestmark = [pytest.mark.browser, pytest.mark.reliability, pytest.mark.slow, pytest.mark.redis]

CLIENTS = 5


class Balancer:
    """A loopback TCP forwarder to one backend port at a time (what a load balancer does after its health check
    marks a backend dead)."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.backend), timeout=5)
        except OSError:
            client.close()
            return
        with client, upstream:
            pair = {client: upstream, upstream: client}
            while not self._closing:
                readable, _, _ = select.select(list(pair), [], [], 0.5)
                for sock in readable:
                    try:
                        data = sock.recv(65536)
                        if not data:
                            return
                        pair[sock].sendall(data)
                    except OSError:
                        return

    def close(self) -> None:
        self._closing = True
        self._listener.close()


@pytest.fixture
def pair(redis_url: str, redis_prefix: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    with live_pair(redis_url=redis_url, redis_prefix=redis_prefix) as (doomed, survivor):
        yield doomed, survivor


def test_killed_process_clients_fail_over_to_the_survivor(
    pair: tuple[LiveServer, LiveServer], open_page: Callable[..., Any]
) -> None:
    doomed, survivor = pair
    balancer = Balancer(doomed.port)
    try:
        page = open_page(survivor)
        endpoint = f"ws://127.0.0.1:{balancer.port}/pulse/ws/"
        tokens = [survivor.token(f"u{i}") for i in range(CLIENTS)]
        watcher = survivor.token("watcher")
        page.evaluate(
            """async ([tokens, endpoint, watcher]) => {
              window.got = tokens.map(() => []);
              window.rts = tokens.map((t) => new Pulse.Realtime(
                { kbId: t.kbId, token: t.token, endpoint, clientId: t.clientId, retryInitial: 200, retryMax: 1000 }));
              await Promise.all(rts.map(async (rt, i) => {
                const room = rt.channels.get('room');
                await room.subscribe('n', (m) => got[i].push(m.data));
                await room.presence.enter({ i });
              }));
              // The watcher talks to the survivor directly.
              window.w = new Pulse.Realtime(
                { kbId: watcher.kbId, token: watcher.token, endpoint: watcher.endpoint, clientId: 'watcher' });
              window.members = [];
              await w.channels.get('room').presence.subscribe((list) => {
                members = list.map((m) => m.clientId + '/' + m.connectionId).sort();
              });
            }""",
            [tokens, endpoint, watcher],
        )
        page.wait_for_function(f"() => members.length === {CLIENTS}")
        before = set(page.evaluate("() => members"))

        doomed.kill()
        killed = time.monotonic()
        balancer.backend = survivor.port
        # Back through the balancer to the survivor, subscribed and present again.
        page.wait_for_function(
            "() => rts.every((rt) => rt.connection.state === 'connected' && "
            "rt.channels.get('room').state === 'attached')",
            timeout=30_000,
        )
        # Present on the survivor, each once.
        page.wait_for_function(
            f"""() => members.length === {CLIENTS} &&
                 rts.every((rt, i) => members.includes('u' + i + '/' + rt.connection.id))""",
            timeout=30_000,
        )
        # Past the sweep of the dead process (15 s): still exactly the five (a resumed connection keeps its
        # connectionId, so the sweep must not remove the member it re-entered on the survivor).
        time.sleep(max(0.0, killed + 18 - time.monotonic()))
        after = set(page.evaluate("() => members"))
        current = set(page.evaluate("() => rts.map((rt, i) => 'u' + i + '/' + rt.connection.id)"))
        assert after == current and len(before) == CLIENTS, (before, after, current)
        survivor.publish("room", "n", 1)
        page.wait_for_function("() => got.every((list) => list.length === 1)")
        page.evaluate("() => { rts.forEach((rt) => rt.close()); w.close(); }")
    finally:
        balancer.close()
