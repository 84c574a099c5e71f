"""A minimal Server-Sent Events client for tests: one HTTP/1.1 GET over a raw socket, chunked or not, parsed as
a browser's EventSource does (HTML spec, "event stream interpretation"), plus the SSE transport's POSTs.

    async with open_stream(port, "/pulse/sse/?ticket=...") as stream:
        assert stream.status == 200
        event = await stream.next_event()           # {"event": "message", "data": "...", "id": "..."}
        frame = await stream.next_frame()           # SDK streams: the data of the next event, decoded
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from bench import rawhttp

__all__ = ["EventStreamParser", "SSEStream", "open_stream", "post_json", "sdk_stream"]


class EventStreamParser:
    """What a browser's EventSource makes of an event stream, a line at a time (the HTML spec's "event stream
    interpretation"; the line without its end of line)."""

    def __init__(self) -> None:
        self.last_id = ""
        self.comments: list[str] = []
        self._data: list[str] = []
        self._name = ""

    def line(self, line: str) -> dict[str, Any] | None:
        """The event the line dispatches (``{"event", "data", "id"}``: at a blank line ending a block with data),
        or None. An id-only block updates ``last_id`` and dispatches nothing; comments go to ``comments``."""
        if line == "":
            event = {"event": self._name or "message", "data": "\n".join(self._data), "id": self.last_id}
            dispatched = bool(self._data)
            self._data, self._name = [], ""
            return event if dispatched else None
        if line.startswith(":"):
            self.comments.append(line[1:])
            return None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._name = value
        elif field == "id":
            self.last_id = value
        return None


class SSEStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body = b""  # the body of a non-200 answer
        self._parser = EventStreamParser()
        self._chunked = False
        self._buffer = ""
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _read_head(self) -> None:
        status_line = (await self.reader.readline()).decode()
        self.status = int(status_line.split()[1])
        while True:
            line = (await self.reader.readline()).decode().rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        if self.status != 200:
            if self._chunked:
                self.body = b"".join([c async for c in self._chunks()])
            elif "content-length" in self.headers:
                self.body = await self.reader.readexactly(int(self.headers["content-length"]))
            return
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _chunks(self) -> AsyncIterator[bytes]:
        if not self._chunked:
            while data := await self.reader.read(65536):
                yield data
            return
        while True:
            size_line = await self.reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await self.reader.readline()
                return
            data = await self.reader.readexactly(size)
            await self.reader.readexactly(2)
            yield data

    async def _pump(self) -> None:
        try:
            async for chunk in self._chunks():
                self._buffer += chunk.decode()
                while "\n" in self._buffer:
                    line, self._buffer = self._buffer.split("\n", 1)
                    event = self._parser.line(line.rstrip("\r"))
                    if event is not None:
                        self._events.put_nowait(event)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._events.put_nowait(None)  # the end of the response

    @property
    def last_id(self) -> str:
        """The last event id the stream set (what a browser sends back as Last-Event-ID)."""
        return self._parser.last_id

    @property
    def comments(self) -> list[str]:
        return self._parser.comments

    async def next_event(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The next event, or None when the response ended."""
        return await asyncio.wait_for(self._events.get(), timeout)

    async def next_frame(self, timeout: float = 10.0, skip_pings: bool = True) -> dict[str, Any] | None:
        """The next frame of an SDK stream (None at the end of the response)."""
        while True:
            event = await self.next_event(timeout)
            if event is None:
                return None
            frame: dict[str, Any] = json.loads(event["data"])
            if skip_pings and frame.get("action") == "ping":
                continue
            return frame

    async def frames_until(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            frame = await self.next_frame(timeout)
            assert frame is not None, f"the stream ended before the expected frame; got {out}"
            out.append(frame)
            if predicate(frame):
                return out

    async def ended(self, timeout: float = 10.0) -> bool:
        """True once the response has ended (events before the end are dropped)."""
        while True:
            if await self.next_event(timeout) is None:
                return True

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self.writer.transport.abort()


@contextlib.asynccontextmanager
async def open_stream(port: int, path: str, headers: dict[str, str] | None = None) -> AsyncIterator[SSEStream]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    stream = SSEStream(reader, writer)
    try:
        await asyncio.wait_for(stream._read_head(), 10)
        yield stream
    finally:
        await stream.aclose()


async def post_json(port: int, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST ``body`` as JSON (bytes: as they are), as pulse.js does; (status, decoded answer)."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer = await rawhttp.post(
        "127.0.0.1", port, path, payload, content_type="text/plain;charset=UTF-8", headers=headers, timeout=10
    )
    return status, json.loads(answer) if answer else None


class SDKStream:
    """An SDK stream: its ticket answer, its event stream, and ``send`` for client frames."""

    def __init__(self, port: int, ticket: dict[str, Any], stream: SSEStream) -> None:
        self.port = port
        self.ticket = ticket
        self.stream_id: str = ticket["stream"]
        self.events = stream
        self._ref = 0

    async def send(self, *frames: dict[str, Any] | str, close: int | None = None, port: int | None = None) -> int:
        body: dict[str, Any] = {
            "stream": self.stream_id,
            "frames": [f if isinstance(f, str) else json.dumps(f) for f in frames],
        }
        if close is not None:
            body["close"] = close
        status, _ = await post_json(port or self.port, "/pulse/sse/send/", body)
        return status

    async def request(self, frame: dict[str, Any], port: int | None = None) -> dict[str, Any]:
        """Send one request with a new ref and return its reply (frames before it are dropped)."""
        self._ref += 1
        ref = self._ref
        assert await self.send({**frame, "ref": ref}, port=port) == 202
        frames = await self.events.frames_until(lambda f: f.get("ref") == ref and f["action"] in ("ok", "error"))
        return frames[-1]


@contextlib.asynccontextmanager
async def sdk_stream(
    port: int, token: str, recover: str | None = None, stream_port: int | None = None
) -> AsyncIterator[SDKStream]:
    """Ticket, then stream (on ``stream_port`` if given): yields once ``connected`` (or an error) arrived."""
    body: dict[str, Any] = {"token": token}
    if recover:
        body["recover"] = recover
    status, ticket = await post_json(port, "/pulse/sse/ticket/", body)
    assert status == 200, ticket
    async with open_stream(stream_port or port, f"/pulse/sse/?ticket={ticket['ticket']}") as stream:
        assert stream.status == 200, stream.body
        yield SDKStream(stream_port or port, ticket, stream)
