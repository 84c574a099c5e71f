"""Redis's own ceiling for django-pulse's publish script, on loopback (docs/scaling.md, "Measured constants").

    python -m bench.redis_ceiling [--requests 100000] [--subscribers 0,4,16]

Starts a redis-server of its own on a free loopback port (never the shared one), loads the broker's
PUBLISH_SCRIPT, and drives it with ``redis-benchmark`` (``EVALSHA`` of the real script on one channel, 50
connections, pipelines of 16), with 0, 4 and 16 subscriber connections on that channel (each stands for one
server process subscribed to it: Redis writes every message once per subscribed process). It prints, per case,
the publishes per second redis-benchmark achieved (requests / wall time), Redis's CPU time per publish (from
``/proc``: user + system, which includes the PUBLISH fan-out to the subscribers and the socket writes) and the
ceiling it implies: Redis runs commands on one thread, so ``1 / cpu per publish`` is one shard's ceiling in
publishes per second on a free core. (``INFO commandstats`` ``usec_per_call`` is printed too, but it is wall
time inside the command: on a loaded machine it counts time the process was not even running.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from django_pulse.broker.redis import PUBLISH_SCRIPT

from .servers import free_port, process_cpu_seconds

CHANNEL = "pulse:bus:m:{default:posts}"
HEAD = '{"action":"message","channel":"posts","name":"new_post","data":{"id":1,"title":"Hello"},"id":"m1","serial":'


def _start(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def _drain(port: int, stop: threading.Event) -> None:
    client = redis.Redis(host="127.0.0.1", port=port)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call, unused-ignore]
    pubsub.subscribe(CHANNEL)
    while not stop.is_set():
        pubsub.get_message(timeout=0.2)
    pubsub.close()
    client.close()


def measure(port: int, pid: int, subscribers: int, requests: int) -> dict[str, Any]:
    client = redis.Redis(host="127.0.0.1", port=port)
    sha = client.script_load(PUBLISH_SCRIPT)
    stop = threading.Event()
    threads = [threading.Thread(target=_drain, args=(port, stop), daemon=True) for _ in range(subscribers)]
    for thread in threads:
        thread.start()
    while int(client.pubsub_numsub(CHANNEL)[0][1]) < subscribers:
        time.sleep(0.05)
    client.config_resetstat()
    command = [
        "redis-benchmark",
        "-p",
        str(port),
        "-n",
        str(requests),
        "-c",
        "50",
        "-P",
        "16",
        "-q",
        "evalsha",
        sha,
        "3",
        "pulse:{default:posts}:serial",
        CHANNEL,
        "pulse:{default:posts}:hist",
        HEAD,
        "E",
        str(int(time.time() * 1000)),
        "100",
        "120000",
        "posts",
        "PUBLISH",
        "",
        "86400000",  # CHANNEL_TTL (ms), the default
        "30000",  # HISTORY_MIN_RETENTION (ms), the default
        "10000",  # the most entries kept however young (broker.base.RESUME_LIMIT)
    ]
    started, cpu = time.monotonic(), process_cpu_seconds(pid)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    elapsed, cpu = time.monotonic() - started, process_cpu_seconds(pid) - cpu
    stats = client.info("commandstats")["cmdstat_evalsha"]
    stop.set()
    for thread in threads:
        thread.join(2)
    client.close()
    del out  # its CSV does not escape the quotes of the frame head; the wall time is enough
    rps = requests / elapsed
    return {
        "subscribers": subscribers,
        "publishes_per_s": round(rps),
        "usec_per_publish_wall": float(stats["usec_per_call"]),
        "cpu_usec_per_publish": round(cpu * 1e6 / requests, 1),
        "ceiling_per_s": round(requests / cpu) if cpu else None,
        "seconds": round(elapsed, 1),
    }


def available() -> bool:
    return bool(shutil.which("redis-server") and shutil.which("redis-benchmark"))


def run(requests: int = 100_000, subscribers: tuple[int, ...] = (0, 4, 16)) -> list[dict[str, Any]]:
    """One measurement per subscriber count, on a redis-server of its own (stopped afterwards)."""
    with tempfile.TemporaryDirectory(prefix="pulse-ceiling-") as root:
        proc, port = _start(Path(root))
        try:
            return [measure(port, proc.pid, count, requests) for count in subscribers]
        finally:
            proc.terminate()
            proc.wait(10)


def render(rows: list[dict[str, Any]]) -> str:
    """The per-shard lines of the bench report."""
    cells = [
        f"{r['subscribers']} subscribed processes: {r['cpu_usec_per_publish']} µs CPU/publish, "
        f"ceiling {r['ceiling_per_s']:,}/s"
        for r in rows
    ]
    return "Redis shard, publish script (bench.redis_ceiling): " + "; ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--subscribers", default="0,4,16")
    options = parser.parse_args()
    for row in run(options.requests, tuple(int(c) for c in options.subscribers.split(","))):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
