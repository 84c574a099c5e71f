"""The benchmark harness (``bench/``): its minimal WebSocket client, its statistics, and quick mode end to end.

The end-to-end test proves the harness works (every server starts, subscribers connect, messages flow, the
JSON and plot are written); it never asserts speed, which ``make bench`` measures.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.loadgen import OP_PONG, Recorder, Subscriber, encode_client_frame
from bench.report import percentiles
from bench.servers import redis_reachable
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def server_frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def unmask(frame: bytes) -> tuple[int, bytes]:
    """(opcode, payload) of one masked client frame."""
    length = frame[1] & 0x7F
    offset = 2
    if length == 126:
        length, offset = int.from_bytes(frame[2:4], "big"), 4
    mask = frame[offset : offset + 4]
    data = frame[offset + 4 : offset + 4 + length]
    return frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def message(seq: int, t_us: int, pad: int = 0) -> bytes:
    frame = {
        "action": "message",
        "channel": "bench",
        "name": "tick",
        "data": {"t": t_us, "s": seq},
        "id": "m_" + "x" * pad,
        "timestamp": 1,
        "serial": seq,
    }
    return json.dumps(frame).encode()  # default separators, with spaces: the parser must not care


async def test_client_frame_is_masked_and_round_trips() -> None:
    for size in (0, 5, 125, 126, 300, 70000):
        payload = os.urandom(size)
        frame = encode_client_frame(payload)
        assert frame[1] & 0x80, "client frames must be masked"
        if size < 65536:
            assert unmask(frame) == (1, payload)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 100_000])
async def test_subscriber_parses_frames_split_anywhere(chunk: int) -> None:
    rec = Recorder()
    sub = Subscriber(rec, b"GET / HTTP/1.1\r\n\r\n", expect_ready=True)
    transport = FakeTransport()
    sub.connection_made(transport)  # type: ignore[arg-type]
    stream = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    stream += server_frame(b'{"action":"ready"}')
    t_now = time.monotonic_ns() // 1000 - 5000  # sent 5 ms ago
    for seq in range(5):
        stream += server_frame(message(seq, t_now, pad=200 * seq))  # short and 16-bit lengths
    stream += server_frame(b"hb", opcode=9)
    stream += server_frame(b'{"action":"ping"}')
    stream += server_frame(message(2, t_now))  # out of order on purpose
    stream += server_frame((4010).to_bytes(2, "big") + b"slow", opcode=8)
    for start in range(0, len(stream), chunk):
        sub.data_received(stream[start : start + chunk])
    await asyncio.sleep(0)

    assert sub.handshake.done() and sub.ready is not None and sub.ready.result() == {"action": "ready"}
    assert list(rec.seqs) == [0, 1, 2, 3, 4, 2]
    assert rec.out_of_order == 1
    assert all(5000 <= lat < 60_000_000 for lat in rec.lats)
    replies = [unmask(w) for w in transport.written[1:]]
    assert (OP_PONG, b"hb") in replies, "a WebSocket ping is answered with a pong carrying its payload"
    assert (1, b'{"action":"pong"}') in replies, "a Pulse ping is answered with a pong frame"
    assert rec.closes[4010] == 1 and transport.closed


async def test_subscriber_reports_a_refused_handshake() -> None:
    sub = Subscriber(Recorder(), b"GET / HTTP/1.1\r\n\r\n")
    sub.connection_made(FakeTransport())  # type: ignore[arg-type]
    sub.data_received(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ConnectionError, match="403"):
        await sub.handshake


def test_percentiles_count_lost_deliveries_as_never_delivered() -> None:
    lats = np.arange(1, 101, dtype=np.int64) * 1000  # 1 ... 100 ms
    full = percentiles(lats, 100)
    assert (full["p50_ms"], full["p99_ms"], full["max_ms"]) == (50.0, 99.0, 100.0)
    lossy = percentiles(lats, 200)  # half of the deliveries never arrived
    assert lossy["p50_ms"] == 100.0 and lossy["p95_ms"] is None and lossy["p99_ms"] is None


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_mode_runs_every_server_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), "--redis-url", REDIS_URL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=560,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "Targets (ratios within this run)" in proc.stdout
    results: dict[str, Any] = json.loads(next(tmp_path.glob("bench-quick-*.json")).read_text())
    assert next(tmp_path.glob("bench-quick-*.png")).stat().st_size > 10_000
    redis_up = redis_reachable(REDIS_URL)
    expected = {
        "websockets",
        "bare-granian",
        "bare-uvicorn",
        "bare-daphne",
        "pulse-granian",
        "pulse-uvicorn",
        "pulse-uvicorn-asgi",
        "pulse-uvicorn-nometrics",
        "pulse-daphne",
        "pulse-daphne-asgi",
        "pulse-sse-uvicorn",
        "pulse-sse-uvicorn-asgi",
        "pulse-sse-daphne",
        "pulse-sse-daphne-asgi",
        "pulse-daphne-redis",
        "pulse-daphne-redis-x2",
        "handwritten-daphne",
        "handwritten-daphne-redis",
    }
    assert set(results["servers"]) == expected
    for name, server in results["servers"].items():
        if server["layer"] == "redis" and not redis_up:
            assert "Redis is not reachable" in server["skipped"]
            continue
        assert "skipped" not in server and "error" not in server, (name, server.get("skipped"), server.get("log"))
        run = server["runs"]["20"]
        assert "error" not in run, (name, run.get("error"), run.get("log"))
        assert run["connect"]["opened"] == 20, (name, run["connect"])
        for phase in run["fixed"]:
            assert phase["received"] > 0.9 * phase["expected"], (name, phase)
        assert run["ramp"]["max_delivered_per_s"] > 0, name
        if server["family"] == "pulse" and "presence" in run:
            presence = run["presence"]
            assert "skipped" in presence or presence["enter"]["events_seen"] == 20, (name, presence)
    assert {t["id"] for t in results["targets"]} >= {
        "ceiling-daphne",
        "handwritten-daphne",
        "p99-daphne",
        "rss-daphne",
        "redis-scaling",
        "sse-daphne",
        "sse-uvicorn",
    }
    prefixes = [s["redis_prefix"] for s in results["servers"].values() if s.get("redis_prefix")]
    if redis_up:
        import redis

        assert len(prefixes) == 3
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for prefix in prefixes:
                assert not list(client.scan_iter(f"{prefix}*", count=1000)), f"the bench left keys under {prefix}"
        finally:
            client.close()
