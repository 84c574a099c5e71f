"""A failover under load, seen from outside: publishers at a fixed rate through a server's HTTP endpoint, and
WebSocket subscribers that recover as docs/history.md tells a client to, on real server processes.

    publishers = Publishers(server, ["a", "b"], rate=50)   # 50 publishes per second per channel, each with an id
    follower = await Follower.start(server, "alice", "a")  # a WebSocket subscriber of channel "a"
    ...                                                     # the fault
    publishers.stop()
    await follower.caught_up(publishers.acknowledged["a"], timeout=20)
    follower.check(publishers.acknowledged["a"])            # every acknowledged id, once, in serial order

A follower treats a ``discontinuity`` as the protocol says: it subscribes again with ``resume`` from the last
serial it received (after ``unsubscribe``), drops live frames until the reply, and from then on takes the
replayed and live messages. Anything else it is told (``resumed: false``, a gap in the serials, an id twice) is
recorded and fails ``check``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.support.rawws import RawWebSocket
from tests.support.servers import LiveServer


class Publishers:
    """One thread per channel publishing ``rate`` messages per second (ids ``{channel}-{n}``) until ``stop()``.
    ``acknowledged[channel]``: the ids answered 200, in order; ``refused``: (channel, id, seconds since start,
    the error) of the others."""

    def __init__(self, server: LiveServer, channels: list[str], *, rate: float) -> None:
        self.server = server
        self.rate = rate
        self.started = time.monotonic()
        self.acknowledged: dict[str, list[str]] = {c: [] for c in channels}
        self.refused: list[tuple[str, str, float, str]] = []
        self.acknowledged_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True) for c in channels]
        for thread in self._threads:
            thread.start()

    def _run(self, channel: str) -> None:
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            message_id = f"{channel}-{n}"
            body = json.dumps({"channel": channel, "event": "e", "data": {"n": n}, "id": message_id}).encode()
            request = urllib.request.Request(
                self.server.url + "/__test__/publish/", data=body, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
            except urllib.error.HTTPError as exc:  # a 503: its body says why
                with exc:
                    reason = json.loads(exc.read())["error"]["message"]
                self.refused.append((channel, message_id, time.monotonic() - self.started, reason))
            except OSError as exc:
                self.refused.append((channel, message_id, time.monotonic() - self.started, repr(exc)))
            else:
                self.acknowledged[channel].append(message_id)
                self.acknowledged_at[message_id] = time.monotonic() - self.started
            n += 1
            next_at += 1 / self.rate
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()  # behind (a slow publish): no burst to catch up

    def count(self) -> int:
        return sum(len(ids) for ids in self.acknowledged.values())

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@dataclass
class Follower:
    server: LiveServer
    client_id: str
    channel: str
    ws: RawWebSocket
    serial: int
    epoch: str
    ids: list[str] = field(default_factory=list)
    serials: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    discontinuities: list[str] = field(default_factory=list)
    resumes: int = 0
    epochs: list[str] = field(default_factory=list)  # every epoch it was told, in order
    _task: asyncio.Task[None] | None = None
    _ref: int = 0

    @classmethod
    async def start(cls, server: LiveServer, client_id: str, channel: str) -> Follower:
        ws = await RawWebSocket.open(server.port)
        token = await asyncio.to_thread(server.token, client_id)
        ws.send_json({"action": "auth", "token": token["token"]})
        assert (await asyncio.wait_for(ws.recv_json(), 10))["action"] == "connected"
        ws.send_json({"action": "subscribe", "channel": channel, "ref": 0})
        reply = await asyncio.wait_for(ws.recv_json(), 10)
        assert (reply["action"], reply["ref"]) == ("ok", 0), reply
        follower = cls(server, client_id, channel, ws, reply["serial"], reply["epoch"], epochs=[reply["epoch"]])
        follower._task = asyncio.ensure_future(follower._follow())
        return follower

    async def _reply(self, ref: int) -> dict[str, Any]:
        """Frames until the reply ``ref``; messages and notices meanwhile are dropped (the resume replays them)."""
        while True:
            frame = await self.ws.recv_json()
            if frame.get("ref") == ref:
                return frame

    async def _resume(self) -> None:
        self._ref += 1
        self.ws.send_json({"action": "unsubscribe", "channel": self.channel, "ref": self._ref})
        await self._reply(self._ref)
        while True:
            self._ref += 1
            resume = {"serial": self.serial, "epoch": self.epoch}
            self.ws.send_json({"action": "subscribe", "channel": self.channel, "ref": self._ref, "resume": resume})
            reply = await self._reply(self._ref)
            if reply["action"] == "ok":
                break
            await asyncio.sleep(0.2)  # unavailable: this process is not subscribed to Redis yet
        self.resumes += 1
        if not reply.get("resumed"):
            self.problems.append(f"resume from {self.serial} answered {reply}")
        self.serial, self.epoch = reply["serial"], reply["epoch"]
        if self.epoch != self.epochs[-1]:
            self.epochs.append(self.epoch)

    async def _follow(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            while True:
                frame = await self.ws.recv_json()
                action = frame["action"]
                if action == "discontinuity":
                    self.discontinuities.append(frame["reason"])
                    await self._resume()
                elif action == "message":
                    if frame["serial"] != self.serial + 1:
                        self.problems.append(f"serial {frame['serial']} after {self.serial}")
                    self.serial = frame["serial"]
                    self.serials.append(frame["serial"])
                    self.ids.append(frame["id"])

    async def caught_up(self, acknowledged: list[str], timeout: float) -> None:
        """Until every acknowledged id has arrived (or ``timeout``: ``check`` then says what is missing)."""
        deadline = time.monotonic() + timeout
        wanted = set(acknowledged)
        while not wanted <= set(self.ids) and time.monotonic() < deadline and not self.problems:
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.ws.close()

    def check(self, acknowledged: list[str]) -> None:
        """Every acknowledged id arrived once; ids arrived in publish order; serials one by one; no failed
        resume."""
        seen = Counter(self.ids)
        missing = [i for i in acknowledged if i not in seen]
        twice = sorted(i for i, n in seen.items() if n > 1)
        order = [int(i.rsplit("-", 1)[1]) for i in self.ids]
        summary = (
            f"{self.client_id}@{self.server.port} on {self.channel!r}: {len(missing)} of {len(acknowledged)} "
            f"acknowledged missing (first {missing[:5]}), twice {twice[:5]}, problems {self.problems[:5]}, "
            f"discontinuities {self.discontinuities}"
        )
        assert not missing and not twice and not self.problems, summary
        assert order == sorted(order), summary


def check_outage_delivery(
    publishers: Publishers, channel: str, raw: list[dict[str, Any]], ids: list[str], serials: list[int], note: str
) -> str:
    """After an outage that made the server miss messages live: ``raw`` (the frames of a subscriber that does not
    resume) shows the ``broker_unavailable`` notice and a gap of acknowledged messages, and ``ids`` / ``serials``
    (what a client under test delivered to its app, in order) hold every acknowledged id once, in publish
    order, serials one by one. Returns the summary the assertions print (``note`` appended)."""
    acknowledged = publishers.acknowledged[channel]
    refused = {message_id for _, message_id, _, _ in publishers.refused}
    assert refused, "the cut refused no publish: no outage happened"
    assert [f["reason"] for f in raw if f["action"] == "discontinuity"] == ["broker_unavailable"]
    missed_live = set(acknowledged) - {f.get("id") for f in raw if f["action"] == "message"}
    assert missed_live, "the outage made no gap: the test proves nothing"
    summary = f"{len(acknowledged)} acknowledged, {len(missed_live)} missed live, {len(refused)} refused; {note}"
    assert [i for i in acknowledged if i not in ids] == [], summary  # every acknowledged message arrived
    assert len(ids) == len(set(ids)), summary  # once each
    # In publish order, serials one by one (a refused publish may still have run: it is in the stream too).
    assert [int(i.rsplit("-", 1)[1]) for i in ids] == sorted(int(i.rsplit("-", 1)[1]) for i in ids), summary
    assert serials == list(range(serials[0], serials[0] + len(serials))), summary
    assert set(ids) <= set(acknowledged) | refused, summary
    return summary
