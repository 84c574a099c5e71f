"""Real server processes for tests: daphne (default), uvicorn or granian on a free loopback port.

    with live_server() as server:                 # in-memory broker, its own SQLite file
        token = server.token("alice")              # minted inside the server process
        server.publish("posts", "new_post", {...})

    with live_pair(redis_url=url, redis_prefix=p) as (a, b):
        ...                                        # two cooperating processes: one Redis, one database

Processes are started with ``PYTHONPATH`` at the repository root, so a test always runs the code of the
checkout it lives in. Their command lines are bench/servers.py's ``server_command``: the benchmark and the tests
start a server the same way (tests may import bench/, which imports nothing of tests/ nor pytest).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import server_command

ROOT = Path(__file__).resolve().parents[2]
ASGI_APP = "tests.asgi:application"


# Ports handed to servers come from a block of this pytest worker's own, below the kernel's ephemeral range
# (32768-60999 on Linux): with pytest-xdist, a port one worker picked cannot be picked by another before its
# server binds it, nor taken as the source port of an outgoing connection meanwhile (what port 0 allowed).
_PORT_BASE, _PORT_BLOCK = 16000, 600
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_ports = itertools.cycle(range(_PORT_BLOCK))
for _ in range(random.randrange(_PORT_BLOCK)):  # another test run on the machine starts elsewhere in the block
    next(_ports)


def free_port() -> int:
    """A loopback port nothing listens on or recently used, from this worker's block."""
    for _ in range(_PORT_BLOCK):
        port = _PORT_BASE + _WORKER * _PORT_BLOCK + next(_ports)
        with socket.socket() as s:
            try:  # without SO_REUSEADDR: a port still in TIME_WAIT is passed over too
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in worker {_WORKER}'s block of {_PORT_BLOCK}")


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait for a server to listen (60 s: a server started on a loaded 2-core CI machine took over 20 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def until(get: Callable[[], Any], ok: Callable[[Any], bool], timeout: float = 20.0) -> Any:
    """Poll ``get()`` every 0.3 s until ``ok`` of its value, for ``timeout`` seconds at most; the last value (the
    caller asserts on it, so a failure shows what was seen)."""
    deadline = time.monotonic() + timeout
    value = get()
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.3)
        value = get()
    return value


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """``sig`` (SIGTERM: its shutdown code runs; nginx's graceful stop is SIGQUIT), SIGKILL after 10 s; nothing
    when it has exited already."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class LiveServer:
    port: int
    proc: subprocess.Popen[bytes]
    database: str
    env: dict[str, str] = field(repr=False)
    log_path: Path = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/pulse/ws/"

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise  # the caller may read the body (and closes it)
            exc.close()  # its response holds the socket: left to the GC, it warns during a later test
            # A server error: its traceback is in the server's log, not in the response.
            raise AssertionError(f"POST {path} -> {exc.code}; the server's log ends:\n{self.log()[-3000:]}") from exc

    def token(self, client_id: str = "tester", **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.post("/__test__/token/", {"clientId": client_id, **kwargs})
        return result

    def publish(self, channel: str, event: str, data: Any = None, **kwargs: Any) -> str:
        return str(self.post("/__test__/publish/", {"channel": channel, "event": event, "data": data, **kwargs})["id"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def fast_path(self) -> dict[str, Any]:
        """Per server, the path this process's connections took (``direct``: the fast path, or ``asgi``), its
        versions, and the frames written directly (docs/servers.md)."""
        with urllib.request.urlopen(self.url + "/__test__/state/", timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())["fastPath"]
        return result

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "django", "migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)


def start_process(
    server: str, port: int, app: str, server_args: list[str] | None, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start ``server`` serving ``app`` on ``port`` from the repository root, its output appended to ``log_path``;
    the caller waits for it (``wait_for_port``) and stops it."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            server_command(server, port, app, server_args or ()),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextlib.contextmanager
def live_server(
    *,
    server: str = "daphne",
    pulse: dict[str, Any] | None = None,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    database: str | None = None,
    port: int | None = None,
    app: str = ASGI_APP,
    extra_env: dict[str, str] | None = None,
    server_args: list[str] | None = None,
) -> Iterator[LiveServer]:
    """Start a server process and stop it afterwards. ``database`` shares another server's SQLite file;
    ``server_args`` are extra command-line options of the server."""
    port = port or free_port()
    tmpdir = tempfile.mkdtemp(prefix="pulse-live-")
    db = database or os.path.join(tmpdir, "db.sqlite3")
    settings = dict(pulse or {})
    if redis_url:
        settings.setdefault("REDIS_URL", redis_url)
    if redis_prefix:
        settings.setdefault("REDIS_PREFIX", redis_prefix)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.server_settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PULSE_LIVE_DB": db,
        "PULSE_LIVE_SETTINGS": json.dumps(settings),
        **(extra_env or {}),
    }
    # A server process gets a database of its own unless the test passes one: CI's DATABASE_URL names one
    # shared PostgreSQL database, and state left there by one test (a disabled app) would leak into the next.
    if "DATABASE_URL" not in (extra_env or {}):
        env.pop("DATABASE_URL", None)
    if database is None:
        migrate(env)
    log_path = Path(tmpdir) / "server.log"
    proc = start_process(server, port, app, server_args, env, log_path)
    live = LiveServer(port=port, proc=proc, database=db, env=env, log_path=log_path)
    try:
        wait_for_port(port, proc=proc)
        yield live
    finally:
        live.stop()


@contextlib.contextmanager
def live_pair(**options: Any) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two server processes started with the same ``live_server`` options, sharing the first one's database
    (and, with ``redis_url`` and ``redis_prefix``, one Redis): a deployment of two processes."""
    with live_server(**options) as first, live_server(**options, database=first.database) as second:
        yield first, second


EXAMPLE_DIR = ROOT / "example_project"


@contextlib.contextmanager
def scratch_database(base: str | None = None) -> Iterator[str]:
    """The URL of a new, empty database, removed afterwards: on the PostgreSQL server of ``base`` (default:
    ``DATABASE_URL``) when it names one (CI), else a SQLite file."""
    base = os.environ.get("DATABASE_URL", "") if base is None else base
    if base.startswith("mysql://"):
        yield from _scratch_mysql(base)
        return
    if not base.startswith(("postgres://", "postgresql://")):
        yield "sqlite:///" + os.path.join(tempfile.mkdtemp(prefix="pulse-example-"), "db.sqlite3")
        return
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(base)
    name = f"pulse_example_{os.getpid()}_{free_port()}"
    admin: dict[str, Any] = {
        "dbname": "postgres",
        "user": config.get("USER") or None,
        "password": config.get("PASSWORD") or None,
        "host": config.get("HOST") or None,
        "port": config.get("PORT") or None,
    }
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _scratch_mysql(base: str) -> Iterator[str]:
    """``scratch_database`` on the MySQL / MariaDB server of ``base`` (mysqlclient)."""
    import dj_database_url
    import MySQLdb  # type: ignore[import-untyped,unused-ignore]  # mysqlclient ships no type information

    config = dj_database_url.parse(base)
    name = f"pulse_example_{os.getpid()}_{free_port()}"
    admin: dict[str, Any] = {"user": config.get("USER") or "root", "password": config.get("PASSWORD") or ""}
    admin.update(host=config.get("HOST") or "127.0.0.1", port=int(config.get("PORT") or 3306))
    conn = MySQLdb.connect(**admin)
    try:
        conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@contextlib.contextmanager
def example_server(
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    server: str = "daphne",
    port: int | None = None,
) -> Iterator[LiveServer]:
    """The example project served as ``make demo`` serves it (its own settings and asgi.py, daphne).

    Its database is a new one (``scratch_database()``: PostgreSQL under CI's ``DATABASE_URL``, else SQLite),
    migrated; pass ``database_url=other.env["DATABASE_URL"]`` to share another example server's database.
    ``redis_url`` + ``redis_prefix`` are the example's ``REDIS_URL`` / ``PULSE_REDIS_PREFIX`` switches.
    """
    with contextlib.ExitStack() as stack:
        url = database_url or stack.enter_context(scratch_database())
        env = {
            "DJANGO_SETTINGS_MODULE": "example_project.settings",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLE_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(
                os.pathsep
            ),
            "DATABASE_URL": url,
            "REDIS_URL": redis_url or "",
            "PULSE_REDIS_PREFIX": redis_prefix or "pulse",
        }
        live = stack.enter_context(
            live_server(
                server=server,
                app="example_project.asgi:application",
                extra_env=env,
                database=url if database_url else None,
                port=port,
            )
        )
        yield live


def pulse_cmd(server: LiveServer, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``manage.py pulse <args>`` in a fresh process with the server's settings (its database, SERVER_URL), or
    with ``env``; the finished process (its exit status and output)."""
    return subprocess.run(
        [sys.executable, "-m", "django", "pulse", *args],
        env=env or server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def pulse_command(server: LiveServer, *args: str) -> str:
    """``pulse_cmd`` that must succeed: its output."""
    done = pulse_cmd(server, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout
