"""docs/deployment.md on loopback: nginx (its configuration taken from the page) in front of two server
processes (daphne, uvicorn or granian) on Redis, and a rolling restart (SIGTERM each process in turn, start it
again) while 200 clients stay subscribed and present and a publisher publishes 20 messages a second.

Checked: every client receives every message exactly once and in order; presence never loses a member or shows
a ghost for longer than PRESENCE_GRACE. The worst gap a client saw between two messages is printed (and
written to docs/deployment.md by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from django_pulse.clients.websocket import Realtime
from tests.support.servers import ROOT, free_port, live_server, start_process, stop_process, wait_for_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.skipif(
        not Path(NGINX).exists() and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
        reason="nginx is not installed (apt-get install nginx; .ci/run installs it)",
    ),
]

CLIENTS = int(os.environ.get("PULSE_DEPLOY_CLIENTS", "200"))
RATE = 20.0
GRACE = 15.0


def nginx_config(tmp: Path, listen: int, upstreams: list[int], static_root: Path) -> str:
    """The ``nginx`` block of docs/deployment.md with this test's ports and paths, inside a main configuration
    that keeps every file nginx writes in ``tmp``."""
    page = (ROOT / "docs" / "deployment.md").read_text()
    block = re.search(r"```nginx\n(map .*?)```", page, re.S)
    assert block, "docs/deployment.md lost its nginx configuration"
    http = block.group(1)
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstreams)
    http, n = re.subn(r"(    server 127\.0\.0\.1:\d+ .*\n)+", servers + "\n", http)
    assert n == 1
    http = http.replace("listen 80;", f"listen 127.0.0.1:{listen};").replace("/srv/app/static/", f"{static_root}/")
    temp = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n"
        f"events {{ worker_connections 4096; }}\n"
        f"http {{\n    access_log off;\n{temp}\n{http}\n}}\n"
    )


@contextlib.contextmanager
def nginx(listen: int, upstreams: list[int]) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="pulse-nginx-"))
    tmp.chmod(0o755)  # nginx's worker runs as nobody when the test runs as root: it must read the static files
    static_root = tmp / "static"
    static_root.mkdir()
    (static_root / "hello.txt").write_text("static ok\n")
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(tmp, listen, upstreams, static_root))
    args = [NGINX, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    check = subprocess.run([*args, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with open(tmp / "stderr.log", "wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for_port(listen, proc=proc)
        yield tmp
    finally:
        stop_process(proc, signal.SIGQUIT)


@dataclass
class Client:
    name: str
    seqs: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    serials: list[tuple[int, int]] = field(default_factory=list)
    reconnects: int = 0
    not_resumed: int = 0
    close_codes: list[int | None] = field(default_factory=list)


async def run_client(
    client: Client,
    url: str,
    token: str,
    stop: asyncio.Event,
    ready: asyncio.Event,
    counter: list[int],
    gate: asyncio.Semaphore,
) -> None:
    async with gate:  # the first connections come in waves, as page loads do, not 200 in the same instant
        for attempt in range(20):
            try:
                rt = await Realtime.connect(url, token)
                break
            except Exception:
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            raise AssertionError(f"{client.name} could not connect")
    await rt.subscribe("feed")
    await rt.request("presence.enter", channel="feed", data={"name": client.name})
    counter[0] += 1
    if counter[0] == CLIENTS:
        ready.set()
    while True:
        async for frame in rt:
            if frame.get("action") == "message" and frame.get("channel") == "feed":
                client.seqs.append(int(frame["data"]["seq"]))
                client.serials.append((int(frame["serial"]), client.reconnects))
                client.times.append(time.monotonic())
        client.close_codes.append(rt.close_code)
        if stop.is_set():
            return
        for attempt in range(100):
            try:
                rt = await Realtime.connect(url, token, recover=rt)
                break
            except (OSError, Exception):
                await asyncio.sleep(0.05 * min(attempt, 10))
        else:
            raise AssertionError(f"{client.name} could not reconnect")
        client.reconnects += 1
        client.not_resumed += sum(1 for ok in rt.resumed.values() if not ok)


def api(url: str, path: str, key: str, body: dict[str, Any] | None = None) -> Any:
    """One HTTP API call through nginx, retried while a restart makes it fail (a POST that a stopping process
    dropped is not retried by nginx: 502). Publishes carry an ``id``, so a retry is never delivered twice."""
    for attempt in range(50):
        try:
            return _api_once(url, path, key, body)
        except urllib.error.HTTPError as exc:
            if exc.code not in (502, 503, 504) or attempt == 49:
                raise
            exc.close()  # its response holds the socket: left to the GC, it warns in a later test
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            if attempt == 49:
                raise
        time.sleep(0.1)
    raise AssertionError("unreachable")


def _api_once(url: str, path: str, key: str, body: dict[str, Any] | None) -> Any:
    request = urllib.request.Request(
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


# Each server as docs/deployment.md runs it: daphne by itself, uvicorn and granian with ``pulse_lifespan``.
SERVERS = {
    "daphne": ("tests.asgi:application", []),
    "uvicorn": ("tests.asgi_lifespan:application", ["--lifespan", "on"]),
    "granian": ("tests.asgi_lifespan:application", []),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("server", list(SERVERS))
async def test_rolling_restart_behind_nginx(server: str, redis_url: str, redis_prefix: str) -> None:
    started = time.monotonic()
    pulse = {"PRESENCE_GRACE": GRACE}
    app, server_args = SERVERS[server]
    with live_server(
        server=server, app=app, server_args=server_args, redis_url=redis_url, redis_prefix=redis_prefix, pulse=pulse
    ) as first:
        second_port = free_port()
        env = first.env
        procs: dict[int, subprocess.Popen[bytes]] = {first.port: first.proc}
        logs = Path(tempfile.mkdtemp(prefix="pulse-deploy-"))

        def start(port: int) -> subprocess.Popen[bytes]:
            proc = start_process(server, port, app, server_args, env, logs / f"{port}.log")
            try:
                wait_for_port(port, timeout=90, proc=proc)  # a loaded machine starts a server slowly
            except BaseException:
                proc.kill()
                proc.wait(5)
                raise
            return proc

        procs[second_port] = await asyncio.to_thread(start, second_port)
        listen = free_port()
        try:
            with nginx(listen, [first.port, second_port]):
                front = f"http://127.0.0.1:{listen}"
                with urllib.request.urlopen(front + "/static/hello.txt", timeout=5) as r:
                    assert r.read() == b"static ok\n"
                enabled = subprocess.run(
                    [sys.executable, "-m", "django", "pulse", "enable", "--json"],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                key = json.loads(enabled.stdout)["apiKey"]
                ws = f"ws://127.0.0.1:{listen}/pulse/ws/"
                tokens = await asyncio.gather(
                    *[asyncio.to_thread(api, front, "/pulse/token/", key, {"userId": f"u{i}"}) for i in range(CLIENTS)]
                )
                clients = [Client(f"u{i}") for i in range(CLIENTS)]
                stop, ready, counter, gate = asyncio.Event(), asyncio.Event(), [0], asyncio.Semaphore(20)
                tasks = [
                    asyncio.create_task(run_client(c, ws, t["token"], stop, ready, counter, gate))
                    for c, t in zip(clients, tokens, strict=True)
                ]
                await asyncio.wait_for(ready.wait(), 90)
                connected_after = time.monotonic() - started

                presence_log: list[tuple[float, int]] = []
                published = [0]

                async def publisher() -> None:
                    t0 = time.monotonic()
                    while not stop.is_set():
                        seq = published[0]
                        await asyncio.to_thread(
                            api,
                            front,
                            "/pulse/publish/",
                            key,
                            {"channel": "feed", "event": "tick", "data": {"seq": seq}, "id": f"tick-{seq}"},
                        )
                        published[0] += 1
                        await asyncio.sleep(max(0.0, t0 + published[0] / RATE - time.monotonic()))

                async def watch_presence() -> None:
                    while not stop.is_set():
                        info = await asyncio.to_thread(api, front, "/pulse/presence/feed/", key)
                        presence_log.append((time.monotonic(), len(info["members"])))
                        await asyncio.sleep(0.25)

                pub = asyncio.create_task(publisher())
                watch = asyncio.create_task(watch_presence())
                await asyncio.sleep(2)
                for port in list(procs):
                    procs[port].send_signal(signal.SIGTERM)
                    await asyncio.to_thread(procs[port].wait, 20)
                    procs[port] = await asyncio.to_thread(start, port)
                    await asyncio.sleep(3)
                await asyncio.sleep(2)
                stop.set()
                await pub
                await watch
                last = published[0]
                # Let the last messages arrive, then end the clients.
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and any(len(c.seqs) < last for c in clients):
                    await asyncio.sleep(0.1)
                final = await asyncio.to_thread(api, front, "/pulse/presence/feed/", key)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for port, proc in procs.items():
                if port != first.port and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(10)
            first.proc = procs[first.port]

    wrong = [c.name for c in clients if c.seqs != list(range(last))]  # missing, out of order or twice
    gaps = [max(b - a for a, b in zip(c.times, c.times[1:], strict=False)) for c in clients if len(c.times) > 1]
    absent = _episodes(presence_log, lambda n: n < CLIENTS)
    ghosts = _episodes(presence_log, lambda n: n > CLIENTS)
    report = {
        "server": server,
        "messages": last,
        "clients": CLIENTS,
        "reconnects": sum(c.reconnects for c in clients),
        "notResumed": sum(c.not_resumed for c in clients),
        "closeCodes": sorted({code for c in clients for code in c.close_codes if code is not None}),
        "worstGapSeconds": round(max(gaps), 3),
        "presenceLongestAbsentSeconds": round(max(absent, default=0.0), 2),
        "presenceLongestGhostSeconds": round(max(ghosts, default=0.0), 2),
        "presenceMin": min(n for _, n in presence_log),
        "presenceMax": max(n for _, n in presence_log),
        "seconds": round(time.monotonic() - started, 1),
        "allConnectedAfterSeconds": round(connected_after, 1),
    }
    print("DEPLOYMENT", json.dumps(report))
    for c in clients[:3]:
        seen = set(c.seqs)
        missing = [n for n in range(last) if n not in seen]
        dupes = sorted({n for n in c.seqs if c.seqs.count(n) > 1})
        print("CLIENT", c.name, "missing", missing[:20], "dupes", dupes[:20], "len", len(c.seqs), c.close_codes)
        for d in dupes[:2]:
            print("  DUP", d, [c.serials[i] for i, n in enumerate(c.seqs) if n == d])
    assert not wrong, f"{len(wrong)} clients missed, reordered or repeated messages, e.g. {wrong[:3]}: {report}"
    assert all(c.reconnects >= 1 for c in clients), report
    assert len(final["members"]) == CLIENTS, report
    assert report["presenceLongestGhostSeconds"] <= GRACE, report
    assert report["presenceMin"] == CLIENTS, f"members left and re-entered during the restart: {report}"


def _episodes(log: list[tuple[float, int]], bad: Any) -> list[float]:
    """Durations of the runs of consecutive samples for which ``bad(count)`` holds."""
    out, since = [], None
    for at, count in log:
        if bad(count) and since is None:
            since = at
        elif not bad(count) and since is not None:
            out.append(at - since)
            since = None
    if since is not None:
        out.append(log[-1][0] - since)
    return out
