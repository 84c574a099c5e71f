"""The in-memory broker: one server process, serials and history in dicts, delivery straight to the hub."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from ..protocol import message_frame
from .base import Broker, HistoryRead, new_epoch

__all__ = ["MemoryBroker", "claim_database", "database_served_elsewhere", "several_workers", "warn_if_several_workers"]

logger = logging.getLogger("django_pulse.broker")

# At most this many message ids are remembered for idempotent publishes (the oldest are forgotten first).
_MAX_SEEN_IDS = 100_000

_SERVERS = ("uvicorn", "gunicorn", "granian", "hypercorn", "daphne")


def _workers_in(argv: list[str]) -> int:
    """The worker count a server's command line asks for (``--workers N``, ``--workers=N``, ``-w N``); 1 if none."""
    for index, arg in enumerate(argv):
        value = None
        if arg in ("--workers", "-w") and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--workers="):
            value = arg.partition("=")[2]
        if value is not None and value.isdigit():
            return int(value)
    return 1


def several_workers(environ: dict[str, str] | None = None, cmdlines: list[list[str]] | None = None) -> str | None:
    """Why this process looks like one of several worker processes of one server, or None.

    Detects ``WEB_CONCURRENCY`` > 1 (uvicorn, gunicorn) and a ``--workers N`` / ``-w N`` > 1 on the command line
    of this process or its parent when it is a known ASGI server (Linux ``/proc``; elsewhere only the variable).
    """
    env = os.environ if environ is None else environ
    concurrency = env.get("WEB_CONCURRENCY", "")
    if concurrency.isdigit() and int(concurrency) > 1:
        return f"WEB_CONCURRENCY={concurrency}"
    if cmdlines is None:
        cmdlines = []
        for pid in (os.getpid(), os.getppid()):
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            cmdlines.append([part.decode(errors="replace") for part in raw.split(b"\0") if part])
    for argv in cmdlines:
        if any(server in arg for arg in argv[:3] for server in _SERVERS):
            count = _workers_in(argv)
            if count > 1:
                return f"{count} workers ({' '.join(argv)[:200]})"
    return None


def warn_if_several_workers() -> bool:
    """Log a warning when this process looks like one of several workers (``several_workers``); returns whether
    it did. Called at start-up (``PulseConfig.ready``) when the in-memory broker is configured."""
    why = several_workers()
    if why:
        _warn_island(why)
    return why is not None


def _database_identity() -> str | None:
    """What makes two processes one installation: the database they share. None for an in-memory SQLite
    database (never shared between processes)."""
    from django.db import connections

    config = connections["default"].settings_dict
    name = str(config.get("NAME") or "")
    if config.get("ENGINE", "").endswith("sqlite3"):
        if not name or name == ":memory:" or "mode=memory" in name:
            return None
        name = str(Path(name).resolve())
    return "|".join([str(config.get("ENGINE")), str(config.get("HOST") or ""), str(config.get("PORT") or ""), name])


def claim_database(identity: str | None = None) -> Any:
    """Called once per process when a server starts serving with the in-memory broker: take a lock named after
    the project's database and return the open file that holds it (the caller keeps it open, and so locked,
    for the process's life: the runtime does); None when nothing was locked. If another process on this
    machine holds the lock, that process is another server of the same site with its own in-memory state
    (``daphne -p 8001`` and ``daphne -p 8002`` without Redis, which ``several_workers`` cannot see): the
    warning is logged."""
    if several_workers():
        return None  # warned about at start-up
    try:
        import fcntl
    except ImportError:  # not on Unix: nothing to lock with
        return None
    identity = _database_identity() if identity is None else identity
    if identity is None:
        return None
    handle = open(_lock_path(identity), "a")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        _warn_island("another server process on this machine serves the same database")
        return None
    return handle


def _lock_path(identity: str) -> Path:
    digest = hashlib.sha256(identity.encode()).hexdigest()[:24]
    return Path(tempfile.gettempdir()) / f"django-pulse-memory-{digest}.lock"


def database_served_elsewhere(identity: str | None = None) -> bool:
    """Whether a server process on this machine serves the project's database with the in-memory broker, or
    served it and is down (a crash, a restart under way: its lock file, taken by ``claim_database``, stays): a
    process that is not that server (``manage.py shell``, a worker) must leave its outbox rows to it, since
    publishing into its own memory would reach no page; the server relays them now, or when it starts again
    (and pages that resume after the restart get them, ``server.recovery.plan_subscribe``)."""
    identity = _database_identity() if identity is None else identity
    if identity is None:
        return False
    return _lock_path(identity).exists()


def _warn_island(why: str) -> None:
    logger.warning(
        "In-memory broker in one of several server processes (%s): each process is its own island, so "
        "publishes reach only the sockets of the process that made them and presence is split. Set "
        "PULSE['REDIS_URL'] (pip install 'django-pulse-realtime[redis]') or run one server process.",
        why,
    )


class MemoryBroker(Broker):
    """Serials and delivery inside one process.

    Every delivery goes through one FIFO (``_pending``) drained on the server's event loop, under the same
    lock that assigns the serial and appends the frame to the topic's history: a publish from a view's thread
    (``call_soon_threadsafe``) and one from async code on the loop can never overtake each other, so delivery
    order is serial order and history order. Each topic's epoch is chosen when its counter is created; a topic
    nobody in this process subscribes to and that nobody published on or read for ``CHANNEL_TTL`` seconds is
    forgotten (counter, epoch, history), so a channel created again afterwards has a new epoch.
    """

    def __init__(self) -> None:
        from .._conf import pulse_settings

        super().__init__()
        self._lock = threading.Lock()
        self._serials: dict[str, int] = {}
        self._epochs: dict[str, str] = {}
        self.history_size = pulse_settings.HISTORY_SIZE
        self.history_ttl_ms = int(pulse_settings.HISTORY_TTL * 1000)
        self.channel_ttl = pulse_settings.CHANNEL_TTL
        # topic -> monotonic time of its last publish or read, oldest first (CHANNEL_TTL).
        self._touched: OrderedDict[str, float] = OrderedDict()
        # topic -> (serial, publish time in ms, frame), the newest HISTORY_SIZE; topics in order of last publish,
        # so histories idle for longer than HISTORY_TTL are dropped from the front cheaply.
        self._history: OrderedDict[str, deque[tuple[int, int, str]]] = OrderedDict()
        self._pending: deque[tuple[str, str]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_scheduled = False
        self._warned = False
        # SSE: topics this process is subscribed to (deliver's answer) and put_once values (key -> value, expiry).
        self._subscribed: set[str] = set()
        self._once: dict[str, tuple[str, float]] = {}
        # Idempotent publishes: (topic, message id) -> (expiry, monotonic; serial), oldest first.
        self._seen_ids: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()

    def _enqueue(self, topic: str, text: str, *, published: bool = True) -> None:
        # Called with self._lock held.
        loop = self._loop
        if loop is None or loop.is_closed():
            # No connection of this process has subscribed anything: nobody here to deliver to. That is
            # normal in a server before its first subscriber, and a mistake in a separate process (shell,
            # worker) that publishes: say so once. A control broadcast (an app disabled by `pulse disable`,
            # which reaches the server over HTTP) has nothing to act on here, and nothing to warn about.
            if published and not self._warned:
                self._warned = True
                logger.warning(
                    "In-memory broker: no WebSocket connection of this process has subscribed yet, so messages "
                    "published here reach no one. To publish from another process (worker, shell), set "
                    "PULSE['REDIS_URL'] or use the running server's HTTP API."
                )
            return
        self._pending.append((topic, text))
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return  # the caller drains right after releasing the lock
        if not self._drain_scheduled:
            self._drain_scheduled = True
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        hub = self.delivery
        pending = self._pending
        with self._lock:
            self._drain_scheduled = False
        while True:
            with self._lock:
                if not pending:
                    return
                topic, text = pending.popleft()
            hub.dispatch(topic, text)

    def _touch(self, topic: str) -> None:
        """``topic`` was used now; forget the topics idle for ``CHANNEL_TTL`` s (called with self._lock held).

        A topic a local connection subscribes to is not idle: its stamp is renewed here while it is subscribed
        and when its last subscriber leaves (``unsubscribe``); ``subscribe`` forgets a stale topic first, so a
        client that comes back to a channel idle past the TTL finds a new epoch."""
        now = time.monotonic()
        touched = self._touched
        horizon = now - self.channel_ttl
        while touched:
            oldest, stamp = next(iter(touched.items()))
            if stamp >= horizon:
                break
            if oldest in self._subscribed:
                touched[oldest] = now  # listened to here: it lives on
                touched.move_to_end(oldest)
                continue
            self._forget(oldest)
        # Stamped after the sweep: a topic idle past the TTL is forgotten first, then starts again (a new epoch).
        touched[topic] = now
        touched.move_to_end(topic)

    def _forget(self, topic: str) -> None:
        self._touched.pop(topic, None)
        self._serials.pop(topic, None)
        self._epochs.pop(topic, None)
        self._history.pop(topic, None)

    def _publish(self, topic: str, head: str) -> int:
        with self._lock:
            serial = self._publish_locked(topic, head)
        self._drain_if_on_loop()
        return serial

    def _publish_once(self, topic: str, head: str, message_id: str, window_ms: int) -> tuple[int, bool]:
        now = time.monotonic()
        seen = self._seen_ids
        with self._lock:
            while seen:
                # Windows vary only when the setting changes (a new runtime, a new broker): expiry order is
                # insertion order, so expired ids are dropped from the front.
                expiry = next(iter(seen.values()))[0]
                if expiry > now and len(seen) < _MAX_SEEN_IDS:
                    break
                seen.popitem(last=False)
            first = seen.get((topic, message_id))
            if first is not None:
                return first[1], True
            serial = self._publish_locked(topic, head)
            seen[(topic, message_id)] = (now + window_ms / 1000, serial)
        self._drain_if_on_loop()
        return serial, False

    def _publish_locked(self, topic: str, head: str) -> int:
        # Called with self._lock held.
        self._touch(topic)
        serial = self._serials.get(topic, 0) + 1
        self._serials[topic] = serial
        if serial == 1:
            self._epochs.setdefault(topic, new_epoch())
        frame = message_frame(head, serial)
        if self.history_size > 0:
            self._remember(topic, serial, frame)
        self._enqueue(topic, frame)
        return serial

    def _remember(self, topic: str, serial: int, frame: str) -> None:
        # Called with self._lock held.
        now = int(time.time() * 1000)
        history = self._history.get(topic)
        if history is None:
            history = self._history[topic] = deque(maxlen=self.history_size)
        else:
            self._history.move_to_end(topic)
        history.append((serial, now, frame))
        horizon = now - self.history_ttl_ms
        while self._history:
            oldest = next(iter(self._history.values()))
            if oldest[-1][1] >= horizon:
                break
            self._history.popitem(last=False)

    def _read(self, topic: str, after: int, before: int | None, limit: int) -> HistoryRead:
        with self._lock:
            self._touch(topic)
            serial = self._serials.get(topic, 0)
            epoch = self._epochs.get(topic)
            if epoch is None:
                epoch = self._epochs[topic] = new_epoch()
            history = self._history.get(topic)
            if limit <= 0 or not history:
                return HistoryRead(serial, epoch)
            horizon = int(time.time() * 1000) - self.history_ttl_ms
            frames: list[tuple[int, str]] = []
            for entry_serial, stamp, frame in reversed(history):
                if entry_serial <= after or stamp < horizon or len(frames) >= limit:
                    break
                if before is None or entry_serial < before:
                    frames.append((entry_serial, frame))
        frames.reverse()
        return HistoryRead(serial, epoch, frames)

    def _broadcast(self, topic: str, text: str) -> None:
        with self._lock:
            self._enqueue(topic, text, published=False)
        self._drain_if_on_loop()

    def _drain_if_on_loop(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self._loop:
            self._drain()

    def settled(self) -> bool:
        # Serials are assigned and frames queued under the lock; _drain dispatches each one it pops before the
        # loop runs anything else, so on the loop an empty queue means everything published has been dispatched.
        with self._lock:
            return not self._pending

    async def publish_message(self, topic: str, head: str) -> int:
        return self._publish(topic, head)

    def publish_message_sync(self, topic: str, head: str) -> int:
        return self._publish(topic, head)

    async def publish_once(self, topic: str, head: str, message_id: str, window_ms: int) -> tuple[int, bool]:
        return self._publish_once(topic, head, message_id, window_ms)

    def publish_once_sync(self, topic: str, head: str, message_id: str, window_ms: int) -> tuple[int, bool]:
        return self._publish_once(topic, head, message_id, window_ms)

    async def broadcast(self, topic: str, text: str) -> None:
        self._broadcast(topic, text)

    def broadcast_sync(self, topic: str, text: str) -> None:
        self._broadcast(topic, text)

    async def last_serial(self, topic: str) -> int:
        with self._lock:
            return self._serials.get(topic, 0)

    async def history(self, topic: str, *, after: int = 0, before: int | None = None, limit: int = 0) -> HistoryRead:
        return self._read(topic, after, before, limit)

    def history_sync(self, topic: str, *, after: int = 0, before: int | None = None, limit: int = 0) -> HistoryRead:
        return self._read(topic, after, before, limit)

    async def subscribe(self, topic: str) -> None:
        # The hub filters by topic; the broker only needs to know which loop serves the connections.
        with self._lock:
            stamp = self._touched.get(topic)
            if stamp is not None and stamp < time.monotonic() - self.channel_ttl:
                self._forget(topic)  # idle past the TTL before this subscriber came
            self._subscribed.add(topic)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            with self._lock:
                self._loop = loop
                self._pending.clear()
                self._drain_scheduled = False

    async def unsubscribe(self, topic: str) -> None:
        with self._lock:
            self._subscribed.discard(topic)
            if topic in self._touched:
                self._touch(topic)  # idle from now

    def holds(self, topic: str) -> bool:
        return topic in self._subscribed

    async def deliver(self, topic: str, text: str) -> bool:
        self._broadcast(topic, text)
        return topic in self._subscribed

    async def put_once(self, key: str, value: str, ttl: float) -> None:
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, (_, expiry) in self._once.items() if expiry <= now]:
                del self._once[stale]
            self._once[key] = (value, now + ttl)

    async def take_once(self, key: str) -> str | None:
        with self._lock:
            entry = self._once.pop(key, None)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]
