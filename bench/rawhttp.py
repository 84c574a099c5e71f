"""One HTTP/1.1 POST on a bare asyncio connection of its own, read to its end.

The load generator's SSE requests (bench/loadgen.py) and the tests' SSE client (tests/support/sseclient.py) send
their POSTs with it: the standard library only, nothing of pytest or of the tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

__all__ = ["post", "split_response"]


async def post(
    host: str,
    port: int,
    path: str,
    payload: bytes,
    *,
    content_type: str = "text/plain",
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> tuple[int, bytes]:
    """POST ``payload`` with ``Connection: close`` and read the answer to its end (``timeout``: at most so many
    seconds); its status and its body, a chunked one decoded. ``headers`` follow the request's own."""
    reader, writer = await asyncio.open_connection(host, port)
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        raw = await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()
    return split_response(raw)


def split_response(raw: bytes) -> tuple[int, bytes]:
    """A whole HTTP/1.1 response's status and body (a chunked body decoded)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" not in head.lower():
        return status, body
    decoded = b""
    while body:
        size_text, _, body = body.partition(b"\r\n")
        size = int(size_text, 16)
        if size == 0:
            break
        decoded, body = decoded + body[:size], body[size + 2 :]
    return status, decoded
