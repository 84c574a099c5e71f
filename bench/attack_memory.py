"""Server memory under the oversized-input attacks of docs/security.md, before and after the guards (loopback, bounded).

    .venv/bin/python -m bench.attack_memory

Each row starts a fresh server process (tests/support/servers.py), measures its RSS, runs one attack from this process
and samples the server's RSS every 10 ms until the attack is over: the table gives RSS before, the peak and
the answer. HTTP attacks send to ``POST /pulse/publish/``; "guarded" is ``tests.asgi:guarded_application``
(``BodySizeLimit``, default limit 2.5 MB). The WebSocket attack is 60 authenticated connections each sending
one 1,000,000-byte frame, under daphne's defaults and with ``--websocket-max-frame-size 131072
--websocket-max-message-size 131072`` (what ``make demo`` passes). Every attack is bounded (bytes sent,
10 s timeouts); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from typing import Any

MB = 1_000_000


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Peak:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join()


def http_attack(port: int, size: int, credential: str | None) -> str:
    head = ["POST /pulse/publish/ HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    if credential:
        head.append(f"Authorization: Bearer {credential}")
    head += [f"Content-Length: {size}", "", ""]
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall("\r\n".join(head).encode())
        sock.settimeout(0.01)
        piece, sent = b"x" * 262144, 0
        while sent < size:
            with contextlib.suppress(TimeoutError):
                reply = sock.recv(100)
                if reply:
                    return f"{reply.split(b' ', 2)[1].decode()} after {sent / MB:.1f} MB sent"
            try:
                sock.sendall(piece[: size - sent])
            except OSError:
                return f"closed after {sent / MB:.1f} MB sent"
            sent += min(len(piece), size - sent)
        sock.settimeout(60)
        reply = sock.recv(100)
        return f"{reply.split(b' ', 2)[1].decode()} after all {size / MB:.0f} MB sent"
    finally:
        sock.close()


async def ws_attack(server: Any, connections: int, frame: int) -> str:
    import websockets
    from websockets.typing import Origin

    sockets = []
    for i in range(connections):
        # One identity per socket: this measures frame sizes, not MAX_CONNECTIONS_PER_CLIENT (50), which would
        # refuse one token's sockets past the 50th.
        token = server.token(f"attacker{i}")["token"]
        ws = await websockets.connect(server.ws_url, origin=Origin("http://127.0.0.1"), max_size=None)
        await ws.send(json.dumps({"action": "auth", "token": token}))
        await ws.recv()
        sockets.append(ws)
    payload = "x" * frame

    async def one(ws: Any) -> str:
        try:
            await asyncio.wait_for(ws.send(payload), 10)
            reply = await asyncio.wait_for(ws.recv(), 10)
            return str(json.loads(reply).get("code", "?"))
        except websockets.ConnectionClosed as exc:
            return f"close {exc.rcvd.code if exc.rcvd else 'abrupt'}"
        except (TimeoutError, OSError):
            return "timeout"

    answers = await asyncio.gather(*(one(ws) for ws in sockets))
    for ws in sockets:
        with contextlib.suppress(Exception):
            await ws.close()
    return ", ".join(sorted({f"{answers.count(a)} x {a}" for a in answers}))


def main() -> None:
    import django

    from tests.support.servers import live_server

    rows: list[tuple[str, str, str, int, int, str]] = []

    @contextlib.contextmanager
    def started(**options: Any) -> Any:
        # A loaded machine can take longer than live_server's 20 s to start a process: try three times.
        for attempt in range(3):
            try:
                with live_server(**options) as server:
                    yield server
                    return
            except TimeoutError:
                if attempt == 2:
                    raise

    def key_for(server: Any) -> str:
        import subprocess

        out = subprocess.run(
            [sys.executable, "-m", "django", "pulse", "enable", "--quiet-if-enabled"],
            env=server.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return next((word for word in out.split() if word.startswith("pk_")), "")

    for server_name in ("daphne", "uvicorn"):
        for app, label in (("tests.asgi:application", "unguarded"), ("tests.asgi:guarded_application", "guarded")):
            for attack, size, with_key in (
                ("200 MB publish, valid API key", 200 * MB, True),
                ("50 MB publish, no credentials", 50 * MB, False),
            ):
                with started(server=server_name, app=app) as server:
                    credential = key_for(server) if with_key else None
                    time.sleep(0.5)
                    before = rss(server.proc.pid)
                    with Peak(server.proc.pid) as peak:
                        answer = http_attack(server.port, size, credential)
                    rows.append((attack, server_name, label, before, peak.peak, answer))
                    print(rows[-1], file=sys.stderr, flush=True)
    for args, label in (
        ([], "daphne defaults (1 MiB frames)"),
        (
            ["--websocket-max-frame-size", "131072", "--websocket-max-message-size", "131072"],
            "--websocket-max-*-size 131072",
        ),
    ):
        with started(server="daphne", pulse={"ALLOWED_ORIGINS": ["*"]}, server_args=args) as server:
            time.sleep(0.5)
            before = rss(server.proc.pid)
            with Peak(server.proc.pid) as peak:
                answer = asyncio.run(ws_attack(server, 60, 1_000_000))
            rows.append(("60 WS frames of 1,000,000 bytes", "daphne", label, before, peak.peak, answer))
    del django
    print("| attack | server | set-up | RSS before | peak RSS | growth | answer |")
    print("|---|---|---|--:|--:|--:|---|")
    for attack, server_name, label, before, peak_rss, answer in rows:
        print(
            f"| {attack} | {server_name} | {label} | {before / MB:.0f} MB | {peak_rss / MB:.0f} MB "
            f"| {(peak_rss - before) / MB:+.0f} MB | {answer} |"
        )


if __name__ == "__main__":
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    main()
