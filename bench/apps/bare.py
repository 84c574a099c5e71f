"""Each ASGI server's own ceiling: a bare ASGI app, no Django, no Channels.

A WebSocket is accepted, answered ``{"action": "ready"}`` and kept in a set; a publish encodes the frame
once and calls every connection's ASGI ``send`` with the same message dict. ``BENCH_BARE_SEND`` picks how:
``seq`` awaits them one after another (fastest on daphne and uvicorn, where a send with room in the socket
buffer completes without suspending), ``gather`` runs them concurrently (fastest on granian, whose send
always suspends); ``bench.servers`` sets the faster one for each server, so this is each server's ceiling.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from bench.apps.publisher import baseline_frame, encode, parse_params, run_publisher

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

GATHER = os.environ.get("BENCH_BARE_SEND", "seq") == "gather"
READY = {"type": "websocket.send", "text": '{"action":"ready"}'}
connections: set[Send] = set()


async def _deliver(seq: int, t_us: int) -> None:
    message = {"type": "websocket.send", "text": encode(baseline_frame(seq, t_us))}
    targets = list(connections)
    if GATHER:
        await asyncio.gather(*(send(message) for send in targets), return_exceptions=True)
        return
    for send in targets:
        try:
            await send(message)
        except Exception:  # a socket that went away while we wrote: the next publish no longer sees it
            connections.discard(send)


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send(READY)
    connections.add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                break
    finally:
        connections.discard(send)


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["path"] == "/__bench__/publish":
        body = json.dumps(await run_publisher(_deliver, parse_params(scope.get("query_string", b"")))).encode()
        status = 200
    elif scope["path"] == "/__bench__/ping":
        body, status = json.dumps({"pid": os.getpid()}).encode(), 200
    else:
        body, status = b'{"error":"not found"}', 404
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "http":
        await _http(scope, receive, send)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
