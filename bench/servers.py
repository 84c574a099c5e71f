"""The servers compared, and their processes: start (pinned with ``taskset``), publish, measure, stop.

CPU time and RSS are read from ``/proc`` for the whole process tree (granian runs the app in a child
process), so every figure covers everything the server spent.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

__all__ = [
    "SERVERS",
    "RunningServer",
    "ServerSpec",
    "free_port",
    "process_cpu_seconds",
    "redis_reachable",
    "server_command",
    "start_server",
]


@dataclass(frozen=True)
class ServerSpec:
    """One server configuration. ``family``: pulse | handwritten | bare | websockets."""

    name: str
    family: str
    server: str
    layer: str = "memory"
    processes: int = 1
    label: str = ""
    # PULSE settings of this configuration (BENCH_PULSE), e.g. to measure with a fast path turned off.
    pulse: tuple[tuple[str, Any], ...] = ()
    # How subscribers connect: "websocket", or "sse" (django_pulse's SSE transport: ticket, stream, send/).
    transport: str = "websocket"

    @property
    def mode(self) -> str:
        """The subscriber handshake: Pulse's auth + subscribe (over a WebSocket or SSE), or wait for the
        baselines' ``ready`` frame."""
        if self.family != "pulse":
            return "ready"
        return "pulse-sse" if self.transport == "sse" else "pulse"

    @property
    def ws_path(self) -> str:
        if self.transport == "sse":
            return "/pulse/sse/"
        return {"pulse": "/pulse/ws/", "handwritten": "/ws/bench/", "bare": "/ws", "websockets": "/ws"}[self.family]

    @property
    def asgi_app(self) -> str:
        return {
            "pulse": "bench.apps.pulse_app:application",
            "handwritten": "bench.apps.handwritten:application",
            "bare": "bench.apps.bare:app",
        }[self.family]


SERVERS: list[ServerSpec] = [
    ServerSpec("websockets", "websockets", "websockets", label="plain websockets server, broadcast()"),
    ServerSpec("bare-granian", "bare", "granian", label="bare ASGI app under granian"),
    ServerSpec("bare-uvicorn", "bare", "uvicorn", label="bare ASGI app under uvicorn"),
    ServerSpec("bare-daphne", "bare", "daphne", label="bare ASGI app under daphne"),
    ServerSpec("pulse-granian", "pulse", "granian", label="django_pulse under granian, in-memory"),
    ServerSpec("pulse-uvicorn", "pulse", "uvicorn", label="django_pulse under uvicorn, in-memory"),
    ServerSpec(
        "pulse-uvicorn-asgi",
        "pulse",
        "uvicorn",
        label="django_pulse under uvicorn, DIRECT_WRITE off",
        pulse=(("DIRECT_WRITE", False),),
    ),
    ServerSpec(
        "pulse-uvicorn-nometrics",
        "pulse",
        "uvicorn",
        label="django_pulse under uvicorn, PULSE METRICS off (the metrics' cost: compare with pulse-uvicorn)",
        pulse=(("METRICS", False),),
    ),
    ServerSpec("pulse-daphne", "pulse", "daphne", label="django_pulse under daphne, in-memory"),
    ServerSpec(
        "pulse-daphne-asgi",
        "pulse",
        "daphne",
        label="django_pulse under daphne, DIRECT_WRITE off",
        pulse=(("DIRECT_WRITE", False),),
    ),
    ServerSpec(
        "pulse-sse-uvicorn", "pulse", "uvicorn", label="django_pulse under uvicorn, SSE subscribers", transport="sse"
    ),
    ServerSpec(
        "pulse-sse-uvicorn-asgi",
        "pulse",
        "uvicorn",
        label="django_pulse under uvicorn, SSE subscribers, DIRECT_WRITE off",
        transport="sse",
        pulse=(("DIRECT_WRITE", False),),
    ),
    ServerSpec(
        "pulse-sse-daphne", "pulse", "daphne", label="django_pulse under daphne, SSE subscribers", transport="sse"
    ),
    ServerSpec(
        "pulse-sse-daphne-asgi",
        "pulse",
        "daphne",
        label="django_pulse under daphne, SSE subscribers, DIRECT_WRITE off",
        transport="sse",
        pulse=(("DIRECT_WRITE", False),),
    ),
    ServerSpec("pulse-daphne-redis", "pulse", "daphne", "redis", label="django_pulse, 1 daphne process, Redis"),
    ServerSpec("pulse-daphne-redis-x2", "pulse", "daphne", "redis", 2, label="django_pulse, 2 daphne processes, Redis"),
    ServerSpec(
        "handwritten-daphne",
        "handwritten",
        "daphne",
        label="hand-written Channels consumer, daphne, InMemoryChannelLayer",
    ),
    ServerSpec(
        "handwritten-daphne-redis",
        "handwritten",
        "daphne",
        "redis",
        label="hand-written Channels consumer, daphne, RedisChannelLayer",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_reachable(url: str) -> bool:
    """Whether something accepts a connection at the host and port of the Redis ``url`` (within 1 s)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1):
            return True
    except OSError:
        return False


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{current}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return pids


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


@dataclass
class RunningServer:
    spec: ServerSpec
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    redis_url: str | None = None
    redis_prefix: str | None = None
    pids: list[int] = field(default_factory=list)

    def get(self, path: str, timeout: float = 600, index: int = 0) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[index]}{path}", timeout=timeout) as response:
            return json.loads(response.read())

    def publish(self, rate: float, count: int, seq0: int) -> dict[str, Any]:
        """Publish ``count`` messages at ``rate``/s inside the (first) server process; returns when done."""
        result: dict[str, Any] = self.get(
            f"/__bench__/publish?rate={rate}&count={count}&seq0={seq0}", timeout=count / rate + 15
        )  # a starved server is recorded, not waited for
        return result

    def tokens(self, n: int) -> list[str]:
        return list(self.get(f"/__bench__/tokens?n={n}", timeout=120)["tokens"])

    def tree(self) -> list[int]:
        return [pid for proc in self.procs for pid in _tree(proc.pid)]

    def cpu_seconds(self) -> list[float]:
        """CPU seconds of each server process (with its descendants)."""
        return [sum(process_cpu_seconds(p) for p in _tree(proc.pid)) for proc in self.procs]

    def rss_bytes(self) -> int:
        return sum(_rss_bytes(p) for p in self.tree())

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for path in self.logs:
            with contextlib.suppress(OSError):
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.redis_url and self.redis_prefix:
            delete_redis_keys(self.redis_url, self.redis_prefix)


def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete this run's keys (never FLUSHALL: the Redis is shared)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


def server_command(server: str, port: int, app: str, args: Sequence[str] = (), backlog: int | None = None) -> list[str]:
    """The command line that serves the ASGI ``app`` with daphne, uvicorn or granian on 127.0.0.1:``port``.

    The one place both the benchmark and the test suite (tests/support/servers.py) start a server from.
    ``args``: further options, placed before ``app`` (so a later one wins over a default here, e.g. uvicorn's
    ``--lifespan on``); ``backlog``: the listen backlog (each server's default otherwise)."""
    py = sys.executable
    if server == "daphne":
        if backlog is None:
            return [py, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *args, app]
        # A Twisted endpoint string: -b/-p listen with Twisted's backlog of 50 and cannot be told another.
        return [py, "-m", "daphne", "-e", f"tcp:port={port}:interface=127.0.0.1:backlog={backlog}", *args, app]
    listen_backlog = [] if backlog is None else ["--backlog", str(backlog)]
    if server == "uvicorn":
        return [
            py,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--lifespan",
            "off",
            *listen_backlog,
            *args,
            app,
        ]
    if server == "granian":
        return [
            py,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *listen_backlog,
            *args,
            app,
        ]
    raise ValueError(f"unknown server {server!r}")


def _command(spec: ServerSpec, port: int, max_connections: int = 20000) -> list[str]:
    if spec.server == "websockets":
        return [sys.executable, "-m", "bench.apps.ws_server", "--port", str(port)]
    # A backlog of 4,096: Twisted's default of 50 (daphne) overflows in a reconnect storm of thousands of clients
    # (refused or retried SYNs). BENCH_BACKLOG: another daphne backlog, to measure what it changes.
    if spec.server == "daphne":
        return server_command("daphne", port, spec.asgi_app, backlog=int(os.environ.get("BENCH_BACKLOG", "4096")))
    if spec.server == "uvicorn":
        return server_command("uvicorn", port, spec.asgi_app, ["--log-level", "warning"], backlog=4096)
    # --backpressure: granian's default (backlog/workers = 1,024) caps concurrent connections, and an open
    # WebSocket counts as one: without it a 5,000-subscriber run would stall at 1,024.
    return server_command(spec.server, port, spec.asgi_app, ["--backpressure", str(max_connections)], backlog=4096)


def migrate_database(path: str) -> None:
    """Create the run's SQLite database (Pulse apps, sessions) once; every Django server shares it."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.apps.settings",
        "BENCH_KIND": "pulse",
        "BENCH_DB": path,
        "PYTHONPATH": _pythonpath(),
    }
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v0", "--skip-checks"], env=env, cwd=ROOT, check=True
    )


def _pythonpath() -> str:
    return os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def start_server(
    spec: ServerSpec,
    *,
    workdir: Path,
    database: str,
    redis_url: str | None,
    pin: list[int] | None,
    timeout: float = 60,
    ports: list[int] | None = None,
    max_connections: int = 20000,
    extra_env: dict[str, str] | None = None,
) -> RunningServer:
    """Start ``spec.processes`` processes and wait until each answers ``/__bench__/ping``. ``ports``: listen
    on these (a restarted server keeps its clients' address); ``max_connections``: granian's backpressure."""
    prefix = f"pulsebench-{secrets.token_hex(4)}" if spec.layer == "redis" else None
    env = {
        **os.environ,
        "PYTHONPATH": _pythonpath(),
        "DJANGO_SETTINGS_MODULE": "bench.apps.settings",
        "BENCH_KIND": spec.family,
        "BENCH_DB": database,
        "BENCH_LAYER": spec.layer,
        "PYTHONUNBUFFERED": "1",
        # The bare app's fastest way to write to every socket on each server, measured: granian's send always
        # suspends (a Rust future), so gathering wins (~13 µs vs ~45 µs per delivery); on daphne and uvicorn a
        # send with room in the buffer completes inline and one-by-one awaits win (gather costs them 30-50 %).
        "BENCH_BARE_SEND": "gather" if spec.server == "granian" else "seq",
    }
    if redis_url and prefix:
        env.update(BENCH_REDIS_URL=redis_url, BENCH_REDIS_PREFIX=prefix)
    if spec.pulse:
        env["BENCH_PULSE"] = json.dumps(dict(spec.pulse))
    env.update(extra_env or {})
    taskset = ["taskset", "-c", ",".join(map(str, pin))] if pin else []
    wanted, ports, procs, logs = ports, [], [], []
    for index in range(spec.processes):
        port = wanted[index] if wanted else free_port()
        log = workdir / f"{spec.name}-{index}.log"
        with open(log, "ab") as out:  # a restarted server (a collapsed C) appends to its log
            procs.append(
                subprocess.Popen(
                    [*taskset, *_command(spec, port, max_connections)],
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        ports.append(port)
        logs.append(log)
    server = RunningServer(spec, ports, procs, logs, redis_url if prefix else None, prefix)
    deadline = time.monotonic() + timeout
    try:
        for index in range(spec.processes):
            while True:
                if procs[index].poll() is not None:
                    raise RuntimeError(f"{spec.name} exited with {procs[index].returncode}:\n{server.log_tail()}")
                try:
                    server.get("/__bench__/ping", timeout=5, index=index)
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{spec.name} did not answer within {timeout} s:\n{server.log_tail()}"
                        ) from exc
                    time.sleep(0.1)
    except BaseException:
        server.stop()
        raise
    server.pids = [proc.pid for proc in procs]
    return server


def taskset_available() -> bool:
    return shutil.which("taskset") is not None
