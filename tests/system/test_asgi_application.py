"""``django_pulse.asgi.get_asgi_application``: the whole application from one call. In process: static files as
runserver serves them, the body limit in front of Django, the lifespan routed. Under real daphne, uvicorn and
granian, serving the helper's application (``tests.asgi``) as docs/installation.md builds it: behind a project's
own middleware the SSE streams keep the fast path and a stream whose reader stops is cut (4010) past
``OUTBOUND_BUFFER_LIMIT``, its memory given back; huge bodies are refused before the server reads them (daphne
included, with and without nginx in front); half-open handshakes are closed within the header deadline. The
figures these print are in docs/security.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from channels.testing import ApplicationCommunicator, HttpCommunicator
from django.test import override_settings

from django_pulse.asgi import get_asgi_application
from django_pulse.streams import sign_stream
from tests.support.servers import free_port, live_server
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


def tree_rss(pid: int) -> int:
    """Resident bytes of a server process and its children (granian serves from a worker process)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
    family, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid in parents.items() if ppid == parent and child not in family]
        family.update(children)
        todo.extend(children)
    total = 0
    for member in family:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


async def _small_window_get(port: int, query: str, until: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """GET ``/pulse/sse/?<query>`` on a socket whose receive buffer is made small before it connects (shrinking
    an open connection's window stalls the sender for its zero-window probes' back-off, seconds to minutes),
    read up to ``until``; the caller then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    writer.write(f"GET /pulse/sse/?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await reader.readuntil(until)
    return reader, writer


async def _stalled_stream(port: int, token: str, channel: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An SDK stream subscribed to ``channel`` whose reader then stops reading."""
    status, ticket = await post_json(port, "/pulse/sse/ticket/", {"token": token})
    assert status == 200, ticket
    reader, writer = await _small_window_get(port, f"ticket={ticket['ticket']}", b'"action":"connected"')
    frames = [json.dumps({"action": "subscribe", "channel": channel})]
    status, _ = await post_json(port, "/pulse/sse/send/", {"stream": ticket["stream"], "frames": frames})
    assert status == 202
    return reader, writer


async def _stalled_unidirectional(port: int, channel: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An anonymous unidirectional stream of ``channel`` (a signed stream name, as ``{% pulse_stream %}`` renders
    it) whose reader stops reading once the stream is open."""
    return await _small_window_get(port, f"stream={sign_stream(channel)}", b":ok\n\n")


async def _until_end(reader: asyncio.StreamReader) -> bytes:
    """Read a stream to the end of its chunked response; its last 300 bytes."""
    tail = b""
    async with asyncio.timeout(60):
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            chunk = await reader.read(65536)
            assert chunk, tail
            tail = (tail + chunk)[-300:]
    return tail


def _server_state(url: str) -> dict[str, Any]:
    """What the server process holds (tests/server_urls.py ``state``), garbage collected first."""
    with urllib.request.urlopen(url + "/__test__/state/?gc=1", timeout=10) as response:
        state: dict[str, Any] = json.loads(response.read())
    return state


STALLED = 5
BLOB = "z" * 60_000
SLOW_LIMIT = 128 * 1024


@pytest.mark.slow
@pytest.mark.parametrize("server_name", ["daphne", "uvicorn", "granian"])
async def test_behind_a_projects_middleware_sse_keeps_the_fast_path_and_the_slow_reader_cut(server_name: str) -> None:
    """The application as docs/installation.md builds it, wrapped in a project's middleware that passes a closure
    as ``send`` (``tests.asgi.wrapped_application``): five streams whose readers stop (three SDK streams, two
    anonymous unidirectional ones) are each cut with 4010
    past ``OUTBOUND_BUFFER_LIMIT`` while far more than that is published to them, the server's memory stays
    within their limits and is given back, and a reader that keeps up gets every event by direct writes (daphne,
    uvicorn) -- the middleware hides the server's send from neither."""
    settings = {"OUTBOUND_BUFFER_LIMIT": SLOW_LIMIT}
    app = "tests.asgi:wrapped_application"
    env = {"PULSE_LIVE_LOGLEVEL": "INFO"}
    with live_server(server=server_name, pulse=settings, app=app, extra_env=env) as server:
        tokens = [(await asyncio.to_thread(server.token, f"slow{i}"))["token"] for i in range(STALLED)]
        fast_token = (await asyncio.to_thread(server.token, "fast"))["token"]
        async with sdk_stream(server.port, fast_token) as fast:
            assert (await fast.events.next_frame() or {}).get("action") == "connected"
            assert (await fast.request({"action": "subscribe", "channel": "big"}))["action"] == "ok"
            # Three SDK streams and two anonymous unidirectional ones.
            stalled = [await _stalled_stream(server.port, token, "big") for token in tokens[:3]]
            stalled += [await _stalled_unidirectional(server.port, "big") for _ in tokens[3:]]
            await asyncio.sleep(0.5)
            idle = tree_rss(server.proc.pid)
            peak = idle
            published = 0
            for _ in range(100):  # up to 6 MB to each stream: 47 times its limit, far past the kernel's buffers
                await asyncio.to_thread(server.publish, "big", "blob", BLOB)
                published += len(BLOB)
                peak = max(peak, tree_rss(server.proc.pid))
                if server.log().count("Closing a slow consumer") >= STALLED:
                    break
            # Every stalled reader was cut as a slow consumer; read now, each stream ends with the 4010 event.
            assert server.log().count("Closing a slow consumer") == STALLED, server.log()[-3000:]
            for index, (reader, writer) in enumerate(stalled):
                tail = await _until_end(reader)
                close = b'data: {"action":"close","code":4010,"reason":"slow_consumer"}\n\n'
                if index >= 3:  # a unidirectional stream names it: the page's listener for "close" reads it
                    close = b"event: close\n" + close
                assert close in tail, tail
                writer.transport.abort()
            frame = await fast.events.frames_until(lambda f: f.get("action") == "message", 30)
            assert frame[-1]["data"] == BLOB
        await asyncio.sleep(1)
        after = tree_rss(server.proc.pid)
        report = await asyncio.to_thread(server.fast_path)
        # Given back: no connection of theirs (nor its outbox, nor a task) is left in the server.
        held: dict[str, Any] = {}
        for _ in range(50):
            held = await asyncio.to_thread(_server_state, server.url)
            if held["consumers"] == held["connections"] == 0:
                break
            await asyncio.sleep(0.2)
        assert held["consumers"] == held["connections"] == 0, held
    mb = 1024 * 1024
    print(
        f"\n{server_name}: {STALLED} stalled streams, {published / mb:.1f} MB published to each: idle "
        f"{idle / mb:.1f} MB, peak +{(peak - idle) / mb:.1f} MB, after the cut +{(after - idle) / mb:.1f} MB"
    )
    # Held for them: at most their limits (0.6 MB), granian's own buffers and the working memory of publishing
    # (measured +4-5 MB under daphne and uvicorn, +10-11 MB under granian); without the cut the server keeps
    # everything published for each of them (here up to 5 x 6 MB).
    assert peak - idle < 16 * mb, (idle, peak)
    assert after - idle < 16 * mb, (idle, after)
    if server_name != "granian":  # granian writes responses in native code: no fast path
        entry = report.get(f"{server_name}-sse", {})
        assert (entry.get("path"), entry.get("drift")) == ("direct", False), report
        assert entry["directFrames"] > 0, report


BODY = 200 * 1024 * 1024
CHUNK = b"0" * (256 * 1024)


def _post_huge(port: int, path: str, chunked: bool) -> tuple[int, bytes]:
    """POST a 200 MB body (``Content-Length``, or chunked without one) streamed from a loop, never held whole:
    (bytes the server took before it refused or stopped reading, the start of its answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {BODY}\r\n\r\n"
    sent = 0
    try:
        sock.sendall(head.encode())
        sock.settimeout(3)  # a server that stops reading (and answered) blocks the send: it took no more
        frame = b"%x\r\n%b\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK
        while sent < BODY:
            sock.sendall(frame)
            sent += len(CHUNK)
    except OSError:  # reset, broken pipe (the server closed), or the timeout above
        pass
    answer = b""
    with contextlib.suppress(OSError):
        sock.settimeout(5)
        answer = sock.recv(4096)
    sock.close()
    return sent, answer


async def _huge_bodies(server: Any, port: int, chunked: bool) -> tuple[int, int, list[tuple[int, bytes]]]:
    """Five concurrent 200 MB bodies to ``port`` (the server's, or a proxy's in front of it): the server's idle and
    peak RSS, and per body (bytes taken, the start of the answer)."""
    await asyncio.sleep(0.5)
    idle = tree_rss(server.proc.pid)
    peak = idle
    paths = ["/pulse/sse/send/", "/pulse/sse/send/", "/pulse/token/", "/pulse/token/", "/pulse/sse/ticket/"]
    running = asyncio.gather(*[asyncio.to_thread(_post_huge, port, path, chunked) for path in paths])
    while not running.done():
        peak = max(peak, tree_rss(server.proc.pid))
        await asyncio.sleep(0.1)
    results = await running
    assert server.proc.poll() is None, server.log()[-3000:]
    mb = 1024 * 1024
    print(
        f"\n{'chunked' if chunked else 'content-length'}: 5 x 200 MB bodies: idle {idle / mb:.1f} MB, peak "
        f"+{(peak - idle) / mb:.1f} MB; sent before the refusal {[round(sent / mb, 1) for sent, _ in results]} MB; "
        f"answers {[answer[:12] for _, answer in results]}"
    )
    return idle, peak, results


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("server_name", ["daphne", "uvicorn", "granian"])
async def test_five_huge_bodies_are_refused_before_the_server_reads_them(server_name: str, chunked: bool) -> None:
    """Five concurrent unauthenticated 200 MB bodies to the SSE ``send/`` and ``ticket/`` endpoints and to a Django
    view: each is answered 413 and its connection closed after a few MB at most (what the kernel's buffers took),
    and the server stays within 40 MB of its idle size (daphne reads a whole body before the application runs,
    unless the adapter refuses it first: +617 MB)."""
    with live_server(server=server_name) as server:
        idle, peak, results = await _huge_bodies(server, server.port, chunked)
    assert peak - idle < 40 * 1024 * 1024, (idle, peak)
    for sent, answer in results:
        assert sent < 20 * 1024 * 1024, results
        assert answer == b"" or answer.startswith(b"HTTP/1.1 413"), answer[:200]


@pytest.mark.slow
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_five_huge_bodies_through_nginx_leave_daphne_as_it_was(chunked: bool) -> None:
    """The same behind nginx as docs/deployment.md configures it: nginx refuses them (its default
    ``client_max_body_size``, 1 MB), daphne stays within 40 MB of its idle size."""
    from tests.system.test_deployment_nginx import NGINX, nginx

    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    with live_server(server="daphne") as server:
        listen = free_port()
        with nginx(listen, [server.port]):
            idle, peak, results = await _huge_bodies(server, listen, chunked)
    assert peak - idle < 40 * 1024 * 1024, (idle, peak)
    # nginx answers 413 at once and reads the rest of the body itself (to keep the connection): none reaches daphne.
    assert all(answer.startswith(b"HTTP/1.1 413") for _, answer in results), results


SLOWLORIS = 400
# granian closes them itself, given the deadline on its command line (docs/servers.md): the helper cannot reach
# into its native HTTP parser.
HEADER_DEADLINE_ARGS = {"daphne": [], "uvicorn": [], "granian": ["--http1-header-read-timeout", "5000"]}


async def _slowloris(port: int, opened: list[float], closed: list[float]) -> None:
    """A WebSocket handshake whose headers never finish: one header line every 2 s until the server closes it
    (its close time appended to ``closed``), or 12 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = asyncio.get_running_loop().time()
    opened.append(start)
    writer.write(b"GET /pulse/ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
    try:
        for line in range(6):
            with contextlib.suppress(asyncio.TimeoutError):
                if await asyncio.wait_for(reader.read(4096), 2) == b"":
                    break
                break  # an answer (a 408 or 400) then the close: closed as well
            writer.write(b"X-Slow-%d: 1\r\n" % line)
            await writer.drain()
        else:
            return
    except OSError:
        pass  # reset: closed
    closed.append(asyncio.get_running_loop().time() - start)
    writer.transport.abort()


@pytest.mark.slow
@pytest.mark.parametrize("server_name", ["daphne", "uvicorn", "granian"])
async def test_half_open_handshakes_are_closed_within_seconds(server_name: str) -> None:
    """400 slowloris sockets (a WebSocket handshake sent one header line every 2 s, never finished) are all closed
    by the server within the helper's 5 s header deadline (and a little scheduling), while a real client still
    connects; daphne's own idle timeout is reset by every line, and uvicorn has none before a first request."""
    with live_server(server=server_name, server_args=HEADER_DEADLINE_ARGS[server_name]) as server:
        opened: list[float] = []
        closed: list[float] = []
        tasks = []
        for _ in range(SLOWLORIS // 50):  # in batches: the listen backlog is small (Twisted's is 50)
            tasks += [asyncio.create_task(_slowloris(server.port, opened, closed)) for _ in range(50)]
            await asyncio.sleep(0.05)
        async with asyncio.timeout(20):
            await asyncio.gather(*tasks)
        token = (await asyncio.to_thread(server.token, "after"))["token"]
        assert token
    print(
        f"\n{server_name}: {len(closed)} of {SLOWLORIS} half-open handshakes closed, after "
        f"{min(closed, default=0):.1f}-{max(closed, default=0):.1f} s"
    )
    assert len(opened) == SLOWLORIS
    assert len(closed) == SLOWLORIS
    assert max(closed) < 8.5, sorted(closed)[-5:]
