"""A tiny scripted server speaking docs/protocol.md, for the client-side edge cases of pulse.js that the
real server cannot be made to produce on demand (every close code, a server that stops talking, a reply
that never comes). Acceptance tests run against the real server (tests/support/servers.py); this one only plays
the other end of the wire so the SDK's state machine can be tested deterministically.

    def script(conn: FakeConnection) -> None:      # runs once per WebSocket connection, in a thread
        conn.accept_auth()                          # reads `auth`, answers `connected`
        conn.serve()                                # answers requests like a well-behaved server

    with FakeServer(script) as server:
        ... server.url, server.connections[0].frames ...
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve


class FakeConnection:
    def __init__(self, server: FakeServer, ws: ServerConnection, index: int) -> None:
        self.server = server
        self.ws = ws
        self.index = index
        self.frames: list[dict[str, Any]] = []  # every frame received, in order
        self.close_code: int | None = None  # the code the client closed with, when it did
        self.connection_id = f"c_fake{index}"

    def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        self.frames.append(frame)
        return frame

    def send(self, **frame: Any) -> None:
        self.ws.send(json.dumps(frame))

    def close(self, code: int, reason: str = "") -> None:
        self.ws.close(code, reason)

    def accept_auth(self, **connected: Any) -> str:
        """Read the `auth` frame and answer `connected`; returns the token."""
        frame = self.recv()
        assert frame["action"] == "auth", frame
        limits = {
            "maxMessageSize": 65536,
            "maxSubscriptions": 128,
            "heartbeatInterval": 15000,
            "heartbeatGrace": 10000,
            "maxPresenceData": 2048,
            "publishRate": 50,
            "whisperRate": 10,
            **connected.pop("limits", {}),
        }
        self.send(
            action="connected",
            connectionId=self.connection_id,
            clientId=connected.pop("clientId", "alice"),
            kbId="default",
            expiresAt=connected.pop("expiresAt", int(time.time() * 1000) + 3_600_000),
            limits=limits,
            **connected,
        )
        return str(frame["token"])

    def reject_auth(self, code: str, close_code: int) -> None:
        self.recv()
        self.send(action="error", code=code, message=f"fake server says {code}")
        self.close(close_code, code)

    def serve(self, until: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Answer requests until the client closes (or `until(frame)` is true for a received frame)."""
        try:
            while True:
                frame = self.recv(timeout=60)
                if until is not None and until(frame):
                    return
                self.answer(frame)
        except ConnectionClosed as closed:
            self.close_code = closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            return

    def answer(self, frame: dict[str, Any]) -> None:
        action, ref, channel = frame.get("action"), frame.get("ref"), frame.get("channel")
        state = self.server
        if action == "pong":
            return
        if action == "subscribe":
            self.send(action="ok", ref=ref, channel=channel, serial=state.serials.get(channel, 0), epoch=state.epoch)
        elif action == "publish":
            state.serials[channel] = state.serials.get(channel, 0) + 1
            self.send(action="ok", ref=ref, id=frame.get("id") or "m_fake", serial=state.serials[channel])
        elif action in ("presence.enter", "presence.update"):
            member = {
                "clientId": "alice",
                "connectionId": self.connection_id,
                "data": frame.get("data"),
                "timestamp": int(time.time() * 1000),
            }
            state.members.setdefault(channel, {})[self.connection_id] = member
            self.send(action="ok", ref=ref, member=member)
        elif action == "presence.leave":
            state.members.get(channel, {}).pop(self.connection_id, None)
            self.send(action="ok", ref=ref, channel=channel)
        elif action in ("presence.get", "presence.subscribe"):
            members = list(state.members.get(channel, {}).values())
            self.send(action="ok", ref=ref, channel=channel, members=members)
        elif action == "auth":
            self.send(action="ok", ref=ref, expiresAt=int(time.time() * 1000) + 3_600_000)
        else:
            self.send(action="ok", ref=ref, channel=channel)


class FakeServer:
    """Plays `script` on each WebSocket connection; plain HTTP GETs of a path in `pages` ({path: (content
    type, body)}) are answered with that page, so a test page and its socket share one loopback origin."""

    def __init__(
        self, script: Callable[[FakeConnection], None], pages: dict[str, tuple[str, str]] | None = None
    ) -> None:
        self.script = script
        self.pages = pages or {}
        self.connections: list[FakeConnection] = []
        self.serials: dict[str, int] = {}
        self.members: dict[str, dict[str, dict[str, Any]]] = {}
        self.epoch = "e1"
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._server: Server = serve(self._handle, "127.0.0.1", 0, process_request=self._page)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/pulse/ws/"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _page(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket" or request.path not in self.pages:
            return None
        content_type, body = self.pages[request.path]
        data = body.encode()
        headers = Headers(
            [("Content-Type", content_type), ("Content-Length", str(len(data))), ("Cache-Control", "no-store")]
        )
        return Response(200, "OK", headers, data)

    def _handle(self, ws: ServerConnection) -> None:
        with self._lock:
            conn = FakeConnection(self, ws, len(self.connections))
            self.connections.append(conn)
        try:
            self.script(conn)
        except ConnectionClosed as closed:
            conn.close_code = closed.rcvd.code if closed.rcvd else None
        except BaseException as error:  # reported by the test through .errors
            self.errors.append(error)

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.connections) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.connections)} connections after {timeout} s, expected {count}")
            time.sleep(0.02)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._thread.join(5)
        if self.errors and exc[0] is None:
            raise AssertionError(f"fake server script failed: {self.errors[0]!r}") from self.errors[0]
