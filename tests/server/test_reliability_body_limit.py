"""Oversized HTTP bodies are refused before they are read (a client cannot make the server buffer an unbounded
body): ``BodySizeLimit``.

In-process: the guard answers 413 from ``Content-Length`` without asking for one byte of body, and stops a
body without ``Content-Length`` the moment it passes the limit. Over a real uvicorn process: a 50 MB
unauthenticated publish is answered 413 after the client sent only 64 KiB of it (unguarded, the server waits
for all 50 MB), and the server's memory does not grow with the body.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from django_pulse.server.body_limit import BodySizeLimit
from tests.support.servers import live_server

pytestmark = pytest.mark.reliability


class Recorder:
    """An ASGI app that reads the whole body and answers 200 with its length."""

    def __init__(self) -> None:
        self.called = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})


def http_scope(headers: list[tuple[bytes, bytes]], path: str = "/pulse/publish/") -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


async def run(app: Any, scope: dict[str, Any], chunks: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """Run ``app``; returns what it sent and how many body messages it asked for."""
    sent: list[dict[str, Any]] = []
    asked = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        index = asked - 1
        return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent, asked


async def test_content_length_over_the_limit_is_413_without_reading() -> None:
    inner = Recorder()
    sent, asked = await run(
        BodySizeLimit(inner, max_body_size=1000), http_scope([(b"content-length", b"200000000")]), [b"x" * 1000]
    )
    assert sent[0]["status"] == 413 and b"request_too_large" in sent[1]["body"]
    assert asked == 0 and not inner.called


async def test_a_body_without_length_is_stopped_as_it_passes_the_limit() -> None:
    inner = Recorder()
    chunks = [b"x" * 400] * 100  # 40,000 bytes, limit 1,000
    sent, asked = await run(BodySizeLimit(inner, max_body_size=1000), http_scope([]), chunks)
    assert sent == [sent[0], sent[1]] and sent[0]["status"] == 413
    assert asked == 3  # 1,200 bytes: the third chunk passed the limit; nothing after it was read


async def test_bodies_within_the_limit_and_other_paths_pass() -> None:
    sent, _ = await run(BodySizeLimit(Recorder(), max_body_size=1000), http_scope([]), [b"x" * 600, b"x" * 400])
    assert (sent[0]["status"], sent[1]["body"]) == (200, b"1000")
    only_api = BodySizeLimit(Recorder(), max_body_size=10, paths=("/pulse/",))
    sent, _ = await run(only_api, http_scope([(b"content-length", b"50")], path="/upload/"), [b"x" * 50])
    assert sent[0]["status"] == 200


async def test_the_default_limit_is_djangos_data_upload_max_memory_size(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    sent, asked = await run(BodySizeLimit(Recorder()), http_scope([(b"content-length", b"101")]), [b"x" * 101])
    assert sent[0]["status"] == 413 and asked == 0
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None  # Django's "no limit": the guard lets it through
    sent, _ = await run(BodySizeLimit(Recorder()), http_scope([(b"content-length", b"101")]), [b"x" * 101])
    assert sent[0]["status"] == 200


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _attack(port: int, declared: int, send_bytes: int, chunked: bool = False) -> tuple[bytes, float, int]:
    """POST /pulse/publish/ with no credentials; returns the status line, the seconds until it came and the
    bytes of body actually sent."""
    headers = [
        "POST /pulse/publish/ HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {declared}",
        "",
        "",
    ]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    start = time.monotonic()
    sent = 0
    try:
        sock.sendall("\r\n".join(headers).encode())
        sock.settimeout(0.05)
        piece = b"x" * 65536
        while sent < send_bytes:
            try:
                reply = sock.recv(200)
                if reply:
                    return reply.split(b"\r\n", 1)[0], time.monotonic() - start, sent
            except TimeoutError:
                pass
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            except OSError:  # the server closed the connection after answering
                break
            sent += len(piece)
        sock.settimeout(10)
        reply = sock.recv(200)
        return reply.split(b"\r\n", 1)[0], time.monotonic() - start, sent
    finally:
        sock.close()


@pytest.mark.processes
@pytest.mark.django_db
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_50_mb_unauthenticated_body_is_refused_before_it_is_read(chunked: bool) -> None:
    with live_server(server="uvicorn", app="tests.asgi:guarded_application") as server:
        before = rss(server.proc.pid)
        status, seconds, sent = _attack(server.port, 50_000_000, 50_000_000, chunked=chunked)
        grown = rss(server.proc.pid) - before
        assert status == b"HTTP/1.1 413 Request Entity Too Large", status
        assert sent < 10_000_000, sent  # answered long before the 50 MB were sent
        assert seconds < 5, seconds
        assert grown < 20_000_000, grown
        assert server.token("after")["token"]  # still serving
