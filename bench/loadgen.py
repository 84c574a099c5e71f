"""The load generator: subscriber sockets in worker processes, read with a minimal WebSocket client.

A full client (``websockets``) costs 15-35 µs per received message, enough to make the load side the
bottleneck; here each socket is a bare ``asyncio.Protocol`` that does the opening handshake, then splits the
byte stream into frames with a few slices and finds the two integers the benchmark needs
(``"t":`` the scheduled send time and ``"s":`` the sequence number) without decoding the JSON. Control frames
(``connected``, ``ok``, ``ready``, ``presence`` …) are rare and decoded with ``json``. Pings (WebSocket and
Pulse's ``{"action": "ping"}``) are answered so long runs are not dropped.

Workers are separate processes (``multiprocessing``, spawn) driven over a pipe by :class:`LoadGen`; each records
``(seq, receive time, latency)`` triples in arrays, and answers statistics queries by sequence range (loss and
latency of a phase) and by time window (deliveries per second during a ramp step).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import random
import threading
import time
import traceback
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, cast

import numpy as np

from bench import rawhttp

__all__ = ["LoadGen", "Target", "encode_client_frame", "raise_nofile", "retry_delay"]

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 1, 8, 9, 10


def encode_client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2/5.3)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    keystream = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")
    return header + mask + masked


def _fail(future: asyncio.Future[Any], error: Exception) -> None:
    """Fail a future someone may await; marked retrieved so an unawaited one logs nothing at exit."""
    if not future.done():
        future.set_exception(error)
        future.exception()


def raise_nofile(wanted: int = 0) -> dict[str, Any]:
    """Raise this process's open-file limit: the soft limit to the hard one, and as root the hard one to
    ``wanted`` too (up to ``fs.nr_open``). Returns the limits and, when they stay below ``wanted``, why."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        with contextlib.suppress(OSError, ValueError), open("/proc/sys/fs/nr_open") as f:
            ceiling = int(f.read())
            with contextlib.suppress(OSError, ValueError):  # only root (CAP_SYS_RESOURCE) may raise it
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, ceiling), min(wanted, ceiling)))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    out: dict[str, Any] = {"soft": soft, "hard": hard}
    if wanted > soft:
        out["too_low"] = f"RLIMIT_NOFILE hard limit {hard} < {wanted} wanted: raise it (ulimit -Hn, limits.conf)"
    return out


def retry_delay(attempt: int, initial: float = 0.5, cap: float = 30.0) -> float:
    """The JS SDK's reconnect delay (pulse.js ``retryDelay``): base doubles from ``initial`` up to ``cap``,
    drawn uniformly from [base/2, base] ("equal jitter")."""
    base = min(cap, initial * 2 ** (max(1, attempt) - 1))
    return float(base * (0.5 + 0.5 * random.random()))


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str


class Recorder:
    """What one worker process received, in arrays (cheap appends, zero-copy numpy views later)."""

    def __init__(self) -> None:
        self.reset()
        self.lost = 0  # sockets that went away without us closing them (since the last full reset)
        self.closes: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.discontinuities = 0

    def reset(self) -> None:
        self.seqs = array("q")
        self.recv = array("q")
        self.lats = array("q")
        self.out_of_order = 0


class Subscriber(asyncio.Protocol):
    """One subscriber socket. ``waiters`` maps a request ref (or "ready"/"connected") to its reply future."""

    def __init__(self, rec: Recorder, request: bytes, expect_ready: bool = False) -> None:
        self.rec = rec
        self.request = request
        self.buf = b""
        self.open = False
        self.closing = False
        self.count = 0
        self.last_seq = -1
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.waiters: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.presence: Counter[str] = Counter()
        # Created before connecting: "ready" may arrive in the same read as the 101 response.
        self.ready: asyncio.Future[dict[str, Any]] | None = loop.create_future() if expect_ready else None

    # -- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.rec.lost += 1
        error = ConnectionError(f"connection lost ({exc})" if exc else "connection closed")
        _fail(self.handshake, error)
        self._fail_waiters(error)

    def data_received(self, data: bytes) -> None:
        if not self.open:
            rest = self._response_head(data, b"HTTP/1.1 101", "handshake refused")
            if not rest:
                return
            data = rest
        buf = self.buf + data if self.buf else data
        n = len(buf)
        pos = 0
        now = time.monotonic_ns() // 1000
        rec = self.rec
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > n:
                break
            opcode = buf[pos] & 0x0F
            pos = end
            if opcode == OP_TEXT:
                if not self._record(buf, start, end, now):
                    self._control(buf[start:end])
            elif opcode == OP_PING:
                self._write(encode_client_frame(buf[start:end], OP_PONG))
            elif opcode == OP_CLOSE:
                payload = buf[start:end]
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                rec.closes[code] += 1
                self._fail_waiters(ConnectionError(f"closed by server with code {code}"))
                self.close()
                return
        self.buf = buf[pos:] if pos < n else b""

    # -- frames ----------------------------------------------------------------------------------------------
    def _response_head(self, data: bytes, accepted: bytes, refused: str) -> bytes:
        """Buffer ``data`` until the response head is whole; then open (its status line starts with ``accepted``)
        or fail the handshake with ``refused`` and close. The bytes after the head (none while waiting or refused)."""
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return b""
        head, rest = self.buf[:end], self.buf[end + 4 :]
        self.buf = b""
        if not head.startswith(accepted):
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            _fail(self.handshake, ConnectionError(f"{refused}: {status}"))
            self.closing = True
            assert self.transport is not None
            self.transport.close()
            return b""
        self.open = True
        self.handshake.set_result(None)
        return rest

    def _record(self, buf: bytes, start: int, end: int, now: int) -> bool:
        """Record the benchmark message in ``buf[start:end]`` (its send time ``"t":`` and sequence ``"s":``, found
        without decoding the JSON) as received at ``now``; False when the frame is not one."""
        i = buf.find(b'"t":', start, end)
        if i < 0:
            return False
        k = buf.find(b",", i, end)
        j = buf.find(b'"s":', k, end)
        seq = int(buf[j + 4 : buf.find(b"}", j, end)])
        rec = self.rec
        rec.seqs.append(seq)
        rec.recv.append(now)
        rec.lats.append(now - int(buf[i + 4 : k]))
        self.count += 1
        if seq < self.last_seq:
            rec.out_of_order += 1
        self.last_seq = seq
        return True

    def _write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def send_json(self, obj: dict[str, Any]) -> None:
        self._write(encode_client_frame(json.dumps(obj, separators=(",", ":")).encode()))

    def request_reply(self, obj: dict[str, Any], key: Any) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters[key] = future
        self.send_json(obj)
        return future

    def _control(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
            action = msg.get("action")
        except (ValueError, AttributeError):
            self.rec.errors["unparsable frame"] += 1
            return
        if action in ("ok", "error") and "ref" in msg:
            future = self.waiters.pop(msg["ref"], None)
            if future is not None and not future.done():
                future.set_result(msg)
            return
        if action == "ready":
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(msg)
            return
        if action == "connected":
            future = self.waiters.pop(action, None)
            if future is not None and not future.done():
                future.set_result(msg)
            return
        if action == "ping":
            self.send_json({"action": "pong"})
        elif action == "presence":
            self.presence[str(msg.get("event"))] += 1
        elif action == "discontinuity":
            self.rec.discontinuities += 1
        elif action == "error":
            future = self.waiters.pop("connected", None)  # an auth failure answers the auth frame
            if future is not None and not future.done():
                future.set_result(msg)
            else:
                self.rec.errors[str(msg.get("code"))] += 1
        else:
            self.rec.errors[f"unexpected frame {str(action)[:40]}"] += 1

    def _fail_waiters(self, error: Exception) -> None:
        if self.ready is not None:
            _fail(self.ready, error)
        waiters, self.waiters = self.waiters, {}
        for future in waiters.values():
            _fail(future, error)

    def close(self) -> None:
        if self.closing or self.transport is None:
            return
        self.closing = True
        if self.open:
            self._write(encode_client_frame((1000).to_bytes(2, "big"), OP_CLOSE))
        self.transport.close()


class SSESubscriber(Subscriber):
    """One subscriber over the SSE transport (docs/transports.md): a GET whose response carries one
    ``data: <frame>`` event per frame; requests go out as POSTs to ``send/`` (``post``), replies come back on
    the stream. Events are found by ``data: `` ... blank line, whatever the chunked framing around them."""

    def data_received(self, data: bytes) -> None:
        if not self.open:
            rest = self._response_head(data, b"HTTP/1.1 200", "stream refused")
            if not rest:
                return
            data = rest
        buf = self.buf + data if self.buf else data
        pos = 0
        now = time.monotonic_ns() // 1000
        rec = self.rec
        while True:
            start = buf.find(b"data: ", pos)
            if start < 0:
                pos = len(buf)
                break
            end = buf.find(b"\n\n", start)
            if end < 0:
                pos = start
                break
            pos = end + 2
            start += 6
            if self._record(buf, start, end, now):
                pass
            elif buf.startswith(b'{"action":"close"', start):
                msg = json.loads(buf[start:end])
                rec.closes[int(msg.get("code", 1005))] += 1
                self._fail_waiters(ConnectionError(f"closed by server with code {msg.get('code')}"))
                self.close()
                return
            elif buf.startswith(b'{"action":"ping"', start):
                continue  # nothing to answer over SSE
            else:
                self._control(buf[start:end])
        self.buf = buf[pos:] if pos < len(buf) else b""

    def close(self) -> None:
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.transport.close()


async def _http_post(target: Target, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One POST on a connection of its own; (status, JSON answer)."""
    status, answer = await rawhttp.post(target.host, target.port, path, json.dumps(body).encode())
    return status, json.loads(answer) if answer else {}


def _upgrade_request(target: Target) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    host = f"{target.host}:{target.port}"
    return (
        f"GET {target.path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: http://{host}\r\n\r\n"
    ).encode()


class Worker:
    """Runs in a load process: executes the controller's commands (``cmd_*``) on its own event loop."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.rec = Recorder()
        self.clients: list[Subscriber] = []
        self.churners: list[Subscriber] = []
        self.observer: Subscriber | None = None
        self.ref = 0

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        # Commands are read and answered by a thread with the pipe left blocking: an event loop reader would
        # make the fd non-blocking (uvloop does), and a large reply would then fail with EAGAIN.
        threading.Thread(target=self._pump, args=(loop,), daemon=True).start()
        await self.done

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                name, args = self.conn.recv()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(self._finish)
                return
            reply = asyncio.run_coroutine_threadsafe(self._run(name, args), loop).result()
            self.conn.send(reply)
            if name == "stop":
                loop.call_soon_threadsafe(self._finish)
                return

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def _run(self, name: str, args: dict[str, Any]) -> tuple[str, Any]:
        try:
            return ("ok", await getattr(self, f"cmd_{name}")(**args))
        except Exception as exc:
            return ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")

    def _next_ref(self) -> int:
        self.ref += 1
        return self.ref

    async def _open(
        self, target: Target, mode: str, token: str | None, channels: Sequence[str], source: str | None = None
    ) -> Subscriber:
        loop = asyncio.get_running_loop()
        if mode == "pulse-sse":
            return await self._open_sse(target, token, channels[0])
        request = _upgrade_request(target)
        # A source address of its own per slice of the sockets: one (source, destination) pair has only the
        # ephemeral port range (~28,000 ports), so 50,000 sockets to one server need two or more sources.
        _, client = await loop.create_connection(
            lambda: Subscriber(self.rec, request, expect_ready=mode != "pulse"),
            target.host,
            target.port,
            local_addr=(source, 0) if source else None,
        )
        try:
            await client.handshake
            if mode == "pulse":
                reply = await client.request_reply({"action": "auth", "token": token}, "connected")
                if reply.get("action") != "connected":
                    raise ConnectionError(f"auth refused: {reply.get('code')}")
                for channel in channels:
                    ref = self._next_ref()
                    reply = await client.request_reply({"action": "subscribe", "ref": ref, "channel": channel}, ref)
                    if reply.get("action") != "ok":
                        raise ConnectionError(f"subscribe refused: {reply.get('code')}")
            else:
                assert client.ready is not None
                await client.ready
        except BaseException:
            client.close()
            raise
        return client

    async def _open_sse(self, target: Target, token: str | None, channel: str) -> Subscriber:
        loop = asyncio.get_running_loop()
        status, ticket = await _http_post(target, target.path + "ticket/", {"token": token})
        if status != 200:
            raise ConnectionError(f"ticket refused: {status} {ticket.get('error')}")
        request = (
            f"GET {target.path}?ticket={ticket['ticket']} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            "Accept: text/event-stream\r\n\r\n"
        ).encode()
        _, client = await loop.create_connection(lambda: SSESubscriber(self.rec, request), target.host, target.port)
        try:
            connected: asyncio.Future[dict[str, Any]] = loop.create_future()
            client.waiters["connected"] = connected
            await client.handshake
            reply = await connected
            if reply.get("action") != "connected":
                raise ConnectionError(f"auth refused: {reply.get('code')}")
            ref = self._next_ref()
            answer: asyncio.Future[dict[str, Any]] = loop.create_future()
            client.waiters[ref] = answer
            frame = json.dumps({"action": "subscribe", "ref": ref, "channel": channel})
            status, _ = await _http_post(target, target.path + "send/", {"stream": ticket["stream"], "frames": [frame]})
            if status != 202:
                raise ConnectionError(f"send refused: {status}")
            reply = await answer
            if reply.get("action") != "ok":
                raise ConnectionError(f"subscribe refused: {reply.get('code')}")
        except BaseException:
            client.close()
            raise
        return client

    async def cmd_connect(
        self,
        targets: list[Target],
        start_index: int,
        count: int,
        mode: str,
        tokens: list[str],
        channel: str,
        concurrency: int,
        timeout: float,
        channels: Sequence[str] = (),
        sources: Sequence[str] = (),
        retry_for: float = 0.0,
        keep: bool = True,
    ) -> dict[str, Any]:
        """Open ``count`` subscribers (``concurrency`` handshakes in flight); returns timings and failures.

        ``channels``: templates subscribed by every client instead of ``channel`` (``{i}``: the client's
        index, ``{g}``: index // 10). ``sources``: local addresses, one per slice of the clients.
        ``retry_for`` > 0: a client that fails retries with the JS SDK's jittered delays, starting with the
        first delay as a dropped SDK client does, until it is in or ``retry_for`` seconds have passed
        (every failed attempt is counted by reason). ``keep`` False: opened clients go to the churn pool."""
        semaphore = asyncio.Semaphore(max(1, concurrency))
        failures: Counter[str] = Counter()
        opened: list[Subscriber] = []
        started = time.monotonic()
        deadline = started + retry_for
        done_at = [started]

        async def one(index: int) -> None:
            target = targets[index % len(targets)]
            token = tokens[index % len(tokens)] if tokens else None
            names = [c.format(i=index, g=index // 10) for c in channels] if channels else [channel]
            source = sources[index % len(sources)] if sources else None
            attempt = 0
            while True:
                if retry_for:
                    attempt += 1
                    await asyncio.sleep(retry_delay(attempt))
                async with semaphore:
                    try:
                        client = await asyncio.wait_for(self._open(target, mode, token, names, source), timeout)
                    except (TimeoutError, OSError, ConnectionError) as exc:
                        reason = "timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
                        failures[reason[:120]] += 1
                        if retry_for and time.monotonic() < deadline:
                            continue
                        return
                opened.append(client)
                done_at[0] = max(done_at[0], time.monotonic())
                return

        await asyncio.gather(*(one(start_index + i) for i in range(count)))
        (self.clients if keep else self.churners).extend(opened)
        return {
            "opened": len(opened),
            "failed": count - len(opened),
            "failures": dict(failures),
            "seconds": time.monotonic() - started,
            "last_in_s": done_at[0] - started,
        }

    async def cmd_churn(
        self,
        targets: list[Target],
        mode: str,
        tokens: list[str],
        channel: str,
        per_s: float,
        seconds: float,
        start_index: int,
        sources: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Connects and disconnects at ``per_s`` (each a connect or a disconnect, alternating over a pool of
        churn clients on a channel of their own, so the steady clients' deliveries are untouched)."""
        failures: Counter[str] = Counter()
        connects = disconnects = 0
        index = start_index
        tasks: set[asyncio.Task[None]] = set()

        async def connect_one(i: int) -> None:
            nonlocal connects
            token = tokens[i % len(tokens)] if tokens else None
            source = sources[i % len(sources)] if sources else None
            try:
                client = await asyncio.wait_for(self._open(targets[0], mode, token, [channel], source), 30)
            except (TimeoutError, OSError, ConnectionError) as exc:
                failures[("timeout" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__)[:120]] += 1
                return
            connects += 1
            self.churners.append(client)

        started = time.monotonic()
        n = int(per_s * seconds)
        for k in range(n):
            due = started + k / per_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if k % 2 == 0 or not self.churners:
                task = asyncio.create_task(connect_one(index))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                index += 1
            else:
                self.churners.pop(0).close()
                disconnects += 1
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        return {"connects": connects, "disconnects": disconnects, "failures": dict(failures)}

    async def cmd_received(self) -> int:
        return len(self.rec.seqs)

    async def cmd_stats(self, ranges: Sequence[tuple[int, int]], windows: Sequence[tuple[int, int]]) -> dict[str, Any]:
        """Per seq range [a, b): (received, latencies µs as int64 bytes); per window [t0, t1) µs: receipts."""
        seqs = np.frombuffer(self.rec.seqs, dtype=np.int64) if len(self.rec.seqs) else np.zeros(0, np.int64)
        recv = np.frombuffer(self.rec.recv, dtype=np.int64) if len(self.rec.recv) else np.zeros(0, np.int64)
        lats = np.frombuffer(self.rec.lats, dtype=np.int64) if len(self.rec.lats) else np.zeros(0, np.int64)
        out_ranges = []
        for a, b in ranges:
            selected = (seqs >= a) & (seqs < b)
            out_ranges.append((int(selected.sum()), lats[selected].tobytes()))
        out_windows = [int(((recv >= t0) & (recv < t1)).sum()) for t0, t1 in windows]
        return {
            "ranges": out_ranges,
            "windows": out_windows,
            "silent": sum(1 for c in self.clients if c.count == 0 and not c.closing),
            "out_of_order": self.rec.out_of_order,
        }

    async def cmd_forget(self) -> None:
        """Drop the clients the server closed (after a restart), keeping the ones still open."""
        self.clients = [c for c in self.clients if not c.closing and c.transport and not c.transport.is_closing()]

    async def cmd_info(self) -> dict[str, Any]:
        return {
            "clients": sum(1 for c in self.clients if not c.closing),
            "lost": self.rec.lost,
            "closes": dict(self.rec.closes),
            "errors": dict(self.rec.errors),
            "discontinuities": self.rec.discontinuities,
        }

    async def cmd_reset(self) -> None:
        self.rec.reset()
        for client in self.clients:
            client.count = 0
            client.last_seq = -1

    async def cmd_close(self) -> None:
        for client in self.clients + self.churners:
            client.close()
        self.clients, self.churners = [], []
        self.observer = None
        self.rec = Recorder()
        await asyncio.sleep(0.2)

    # -- presence --------------------------------------------------------------------------------------------
    async def cmd_presence_observe(self, channel: str) -> dict[str, Any]:
        """Make the first client a presence observer of ``channel``; returns the reply (ok or error)."""
        self.observer = self.clients[0]
        ref = self._next_ref()
        return await asyncio.wait_for(
            self.observer.request_reply({"action": "presence.subscribe", "ref": ref, "channel": channel}, ref), 10
        )

    async def cmd_presence_events(self) -> dict[str, int]:
        return dict(self.observer.presence) if self.observer else {}

    async def cmd_presence_storm(self, action: str, channel: str, wait_s: float) -> dict[str, Any]:
        """Every client sends ``presence.<action>`` at once; returns when all replied (time, error codes)."""
        futures = []
        for index, client in enumerate(self.clients):
            ref = self._next_ref()
            request: dict[str, Any] = {"action": f"presence.{action}", "ref": ref, "channel": channel}
            if action == "enter":
                request["data"] = {"i": index}
            futures.append(client.request_reply(request, ref))
        results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), wait_s)
        codes: Counter[str] = Counter()
        for result in results:
            if isinstance(result, BaseException):
                codes[type(result).__name__] += 1
            elif result.get("action") != "ok":
                codes[str(result.get("code"))] += 1
        return {"done_at": time.monotonic(), "ok": len(results) - sum(codes.values()), "errors": dict(codes)}

    async def cmd_stop(self) -> None:
        await self.cmd_close()


def worker_main(conn: Connection, cpus: list[int] | None, nofile: int = 0) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    if nofile:
        raise_nofile(nofile)
    worker = Worker(conn)
    try:
        import uvloop
    except ImportError:
        asyncio.run(worker.serve())
    else:
        uvloop.run(worker.serve())


class LoadGen:
    """The controller's handle on the load processes."""

    def __init__(self, processes: int, cpus: list[int] | None, nofile: int = 0) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, cpus, nofile), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [int(p.pid) for p in self.procs]

    def call(
        self, name: str, per_worker: Sequence[dict[str, Any]] | None = None, timeout: float = 600, **args: Any
    ) -> list[Any]:
        """Send a command to every worker (same ``args``, or one dict each) and gather the replies."""
        self.send(name, per_worker, **args)
        return self.gather(name, timeout)

    def send(self, name: str, per_worker: Sequence[dict[str, Any]] | None = None, **args: Any) -> None:
        """The first half of ``call``: the workers start ``name``; ``gather`` waits for their replies."""
        arguments = list(per_worker) if per_worker is not None else [args] * len(self.conns)
        for conn, a in zip(self.conns, arguments, strict=True):
            conn.send((name, a))

    def gather(self, name: str, timeout: float = 600) -> list[Any]:
        return [self._reply(conn, name, timeout) for conn in self.conns]

    @staticmethod
    def _reply(conn: Connection, name: str, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise TimeoutError(f"load worker did not answer {name!r} within {timeout} s")
        status, value = conn.recv()
        if status != "ok":
            raise RuntimeError(f"load worker failed in {name!r}: {value}")
        return value

    def call_one(self, index: int, name: str, timeout: float = 600, **args: Any) -> Any:
        conn = self.conns[index]
        conn.send((name, args))
        return self._reply(conn, name, timeout)

    def connect(self, *args: Any, **options: Any) -> dict[str, Any]:
        """Open subscribers spread over the workers and wait (``connect_send``'s arguments)."""
        started = time.monotonic()
        self.connect_send(*args, **options)
        return self.connect_gather(started)

    def connect_send(
        self,
        targets: list[Target],
        count: int,
        mode: str,
        tokens: list[str],
        channel: str,
        concurrency: int,
        timeout: float,
        **extra: Any,
    ) -> None:
        """Start a ``connect`` without waiting (a reconnect storm starts before the server is back)."""
        workers = len(self.conns)
        shares = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
        starts = [sum(shares[:i]) for i in range(workers)]
        args = [
            {
                "targets": targets,
                "start_index": starts[i],
                "count": shares[i],
                "mode": mode,
                "tokens": tokens,
                "channel": channel,
                "concurrency": max(1, concurrency // workers),
                "timeout": timeout,
                **extra,
            }
            for i in range(workers)
        ]
        self.send("connect", args)

    def connect_gather(self, started: float, timeout: float = 600) -> dict[str, Any]:
        replies = self.gather("connect", timeout)
        failures: Counter[str] = Counter()
        for reply in replies:
            failures.update(reply["failures"])
        return {
            "opened": sum(r["opened"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "failures": dict(failures),
            "seconds": time.monotonic() - started,
            "last_in_s": max(r["last_in_s"] for r in replies) if replies else 0.0,
        }

    def received(self) -> int:
        return sum(self.call("received"))

    def stats(self, ranges: Sequence[tuple[int, int]], windows: Sequence[tuple[int, int]]) -> dict[str, Any]:
        replies = self.call("stats", ranges=list(ranges), windows=list(windows))
        merged_ranges = []
        for index in range(len(ranges)):
            count = sum(r["ranges"][index][0] for r in replies)
            lats = np.concatenate([np.frombuffer(r["ranges"][index][1], dtype=np.int64) for r in replies])
            merged_ranges.append((count, lats))
        return {
            "ranges": merged_ranges,
            "windows": [sum(r["windows"][i] for r in replies) for i in range(len(windows))],
            "silent": sum(r["silent"] for r in replies),
            "out_of_order": sum(r["out_of_order"] for r in replies),
        }

    def info(self) -> dict[str, Any]:
        replies = self.call("info")
        closes: Counter[int] = Counter()
        errors: Counter[str] = Counter()
        for r in replies:
            closes.update(r["closes"])
            errors.update(r["errors"])
        return {
            "clients": sum(r["clients"] for r in replies),
            "lost": sum(r["lost"] for r in replies),
            "closes": {str(k): v for k, v in closes.items()},
            "errors": dict(errors),
            "discontinuities": sum(r["discontinuities"] for r in replies),
        }

    def stop(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop", {}))
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
