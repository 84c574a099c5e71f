"""The near-limit reference: a plain ``websockets`` server (no ASGI) broadcasting one pre-encoded frame.

``python -m bench.apps.ws_server --port N``; subscribers connect to ``/ws``; ``GET /__bench__/publish`` as
for the other servers (answered from ``process_request``, before any WebSocket handshake).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from http import HTTPStatus
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from bench.apps.publisher import baseline_frame, encode, parse_params, run_publisher

connections: set[ServerConnection] = set()


async def _deliver(seq: int, t_us: int) -> None:
    broadcast(connections, encode(baseline_frame(seq, t_us)))


async def process_request(connection: ServerConnection, request: Request) -> Response | None:
    url = urlsplit(request.path)
    if url.path == "/__bench__/publish":
        result = await run_publisher(_deliver, parse_params(url.query))
        return connection.respond(HTTPStatus.OK, json.dumps(result))
    if url.path == "/__bench__/ping":
        return connection.respond(HTTPStatus.OK, json.dumps({"pid": os.getpid()}))
    return None


async def handler(connection: ServerConnection) -> None:
    await connection.send('{"action":"ready"}')
    connections.add(connection)
    try:
        async for _ in connection:
            pass
    finally:
        connections.discard(connection)


async def main(port: int) -> None:
    async with serve(
        handler, "127.0.0.1", port, process_request=process_request, compression=None, max_queue=None, backlog=4096
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    try:
        import uvloop  # the ASGI servers run on uvloop too (uvicorn, granian): compare like with like
    except ImportError:
        asyncio.run(main(port))
    else:
        uvloop.run(main(port))
