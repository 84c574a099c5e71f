"""``django_pulse.asgi.get_asgi_application``: the whole application from one call. In process: static files as
runserver serves them, the body limit in front of Django, the lifespan routed. Under a real daphne (the helper
is what ``tests.asgi`` serves): the SSE stream still gets daphne's own ``send`` through it, so events take the
fast path and a stream whose reader stops is cut (4010) past ``OUTBOUND_BUFFER_LIMIT`` (docs/transports.md).
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from channels.testing import ApplicationCommunicator, HttpCommunicator
from django.test import override_settings

from django_pulse.asgi import get_asgi_application
from tests.support.servers import live_server
from tests.support.sseclient import post_json, sdk_stream

PULSE_JS = "/static/django_pulse/pulse.js"


async def _get(application: Any, path: str) -> int:
    communicator = HttpCommunicator(application, "GET", path)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    await communicator.wait(5)
    return int(start["status"])


@pytest.mark.parametrize(
    ("debug", "static_files", "served"),
    [(True, None, True), (False, None, False), (False, True, True), (True, False, False)],
)
async def test_static_files_are_served_as_runserver_serves_them(
    debug: bool, static_files: bool | None, served: bool
) -> None:
    with override_settings(DEBUG=debug):
        application = get_asgi_application(static_files=static_files)
    assert (await _get(application, PULSE_JS) == 200) is served


@pytest.mark.django_db(transaction=True)
async def test_django_is_behind_the_body_limit() -> None:
    application = get_asgi_application(max_body_size=1000)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"5000")]
    communicator = HttpCommunicator(application, "POST", "/pulse/token/", body=b"x" * 5000, headers=headers)
    response = await communicator.get_response()
    assert response["status"] == 413 and b"request_too_large" in response["body"]


async def test_the_lifespan_registers_and_shuts_down() -> None:
    communicator = ApplicationCommunicator(get_asgi_application(), {"type": "lifespan"})
    await communicator.send_input({"type": "lifespan.startup"})
    assert (await communicator.receive_output(5))["type"] == "lifespan.startup.complete"
    await communicator.send_input({"type": "lifespan.shutdown"})
    assert (await communicator.receive_output(5))["type"] == "lifespan.shutdown.complete"


def test_the_wiring_check_sees_the_websocket_route() -> None:
    from django.core.checks import run_checks

    with override_settings(ASGI_APPLICATION="tests.asgi.application"):
        assert "django_pulse.W021" not in {m.id for m in run_checks()}


@pytest.mark.slow
async def test_under_daphne_sse_keeps_the_fast_path_and_the_slow_reader_cut() -> None:
    limit = {"OUTBOUND_BUFFER_LIMIT": 128 * 1024}
    with live_server(server="daphne", pulse=limit, extra_env={"PULSE_LIVE_LOGLEVEL": "INFO"}) as server:
        fast_token = (await asyncio.to_thread(server.token, "fast"))["token"]
        slow_token = (await asyncio.to_thread(server.token, "slow"))["token"]
        async with sdk_stream(server.port, fast_token) as fast:
            assert (await fast.events.next_frame() or {}).get("action") == "connected"
            assert (await fast.request({"action": "subscribe", "channel": "big"}))["action"] == "ok"
            # A stream not read until the cut (its reader stops at 2 KB, its kernel buffer small): daphne's fills.
            status, ticket = await post_json(server.port, "/pulse/sse/ticket/", {"token": slow_token})
            assert status == 200, ticket
            # Its receive buffer made small before it connects (shrinking an open connection's window stalls
            # the sender for its zero-window probes' back-off, seconds to minutes).
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
            writer.write(f"GET /pulse/sse/?ticket={ticket['ticket']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await reader.readuntil(b'"action":"connected"')
            frames = [json.dumps({"action": "subscribe", "channel": "big"})]
            status, _ = await post_json(server.port, "/pulse/sse/send/", {"stream": ticket["stream"], "frames": frames})
            assert status == 202
            await asyncio.sleep(0.5)
            blob = "z" * 60_000
            for _ in range(400):  # up to 24 MB: far past the limit and the kernel's buffers for a non-reader
                await asyncio.to_thread(server.publish, "big", "blob", blob)
                if "Closing a slow consumer" in server.log():
                    break
            # The server cut it as a slow consumer: without daphne's own send it has no buffer probe and would
            # keep buffering for a reader that never reads. Read now, the stream ends with the 4010 close event.
            assert "Closing a slow consumer" in server.log(), server.log()[-3000:]
            tail = b""
            async with asyncio.timeout(30):
                while not tail.endswith(b"\r\n0\r\n\r\n"):  # the end of the chunked response
                    chunk = await reader.read(65536)
                    assert chunk, tail
                    tail = (tail + chunk)[-300:]
            assert b'data: {"action":"close","code":4010,"reason":"slow_consumer"}\n\n' in tail, tail
            writer.transport.abort()
            # The reader that keeps up was not held back and got the events by direct writes.
            frame = await fast.events.frames_until(lambda f: f.get("action") == "message", 30)
            assert frame[-1]["data"] == blob
        report = await asyncio.to_thread(server.fast_path)
    entry = report["daphne-sse"]
    assert (entry["path"], entry["drift"]) == ("direct", False), report
    assert entry["directFrames"] > 0, report
