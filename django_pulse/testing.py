"""Helpers for your project's tests (docs/testing.md): what was published, an in-memory configuration, and a
WebSocket client that speaks the Pulse protocol in-process.

    from django_pulse.testing import capture_published, pulse_in_memory, PulseCommunicator

- ``capture_published()`` records every message published while it is active (``channel, event, data, id``),
  from the server SDK, the HTTP API, client publishes and publish-on-save. Under ``TestCase`` the test's
  transaction never commits, so reading the capture first runs the on-commit callbacks registered since it
  started (as if the transaction had committed; Django's ``captureOnCommitCallbacks(execute=True)`` does the
  same); under ``TransactionTestCase`` they ran at commit already.
- ``pulse_in_memory()`` switches broker, presence and channel layer to process memory (no Redis), with fresh
  state, for the duration.
- ``PulseCommunicator`` drives your ``ASGI_APPLICATION`` (or the Pulse routes) with Channels'
  ``WebsocketCommunicator``: ``connect``, ``auth``, ``subscribe``, ``publish``, presence, ``receive_message``.
  It sends ``Origin: http://testserver`` by default and says why a refused handshake was refused.
- ``PulseTestMixin`` gives a ``TestCase``/``TransactionTestCase`` all of it; the pytest plugin
  (``django_pulse.pytest_plugin``, loaded automatically) gives the fixtures ``pulse_memory`` and
  ``pulse_published``.

This module imports nothing from Channels' test tools until a communicator is made, so the pytest plugin can
load it before Django is configured.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.db import connections
from django.test.utils import override_settings

__all__ = [
    "HandshakeRefused",
    "PublishedMessage",
    "PulseActionError",
    "PulseCapture",
    "PulseCommunicator",
    "PulseTestMixin",
    "capture_published",
    "pulse_in_memory",
    "reset_pulse_state",
]

logger = logging.getLogger("django_pulse.testing")

_UNSET: Any = object()


# -- what was published ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedMessage:
    """One published message as its subscribers receive it (``data`` decoded from JSON)."""

    channel: str
    event: str
    data: Any
    id: str
    kb_id: str
    serial: int
    client_id: str | None
    exclude: str | None = None  # published for the others of this connection id (``exclude`` / ``toOthers``)

    def matches(self, channel: str | None, event: str | None, data: Any, kb_id: str | None) -> bool:
        return (
            (channel is None or self.channel == channel)
            and (event is None or self.event == event)
            and (data is _UNSET or self.data == data)
            and (kb_id is None or self.kb_id == kb_id)
        )


def _describe(channel: str | None, event: str | None, data: Any, kb_id: str | None) -> str:
    parts = []
    if event is not None:
        parts.append(f"event {event!r}")
    parts.append("on any channel" if channel is None else f"on channel {channel!r}")
    if data is not _UNSET:
        parts.append(f"with data {data!r}")
    if kb_id is not None:
        parts.append(f"in app {kb_id!r}")
    return " ".join(parts)


class PulseCapture:
    """Records what is published while started (``with capture_published() as published:``).

    ``messages`` (and every assertion) first runs the on-commit callbacks that were registered since the
    capture started and are still pending, when the database connection is inside the test's transaction
    (``TestCase``): that is how publish-on-save and ``transaction.on_commit(lambda: pulse.publish(...))``
    happen in a test whose transaction never commits.
    """

    def __init__(self) -> None:
        self._messages: list[PublishedMessage] = []
        self._skip: dict[str, list[Any]] = {}  # alias -> on-commit entries pending before start, or run by us
        self._active = False

    # life cycle
    def start(self) -> PulseCapture:
        from . import signals

        for conn in connections.all(initialized_only=True):
            self._skip[conn.alias] = list(conn.run_on_commit)
        signals.message_published.connect(self._record, weak=False, dispatch_uid=f"pulse-capture-{id(self)}")
        self._active = True
        return self

    def stop(self) -> None:
        from . import signals

        if self._active:
            self.run_on_commit()
            signals.message_published.disconnect(dispatch_uid=f"pulse-capture-{id(self)}")
            self._active = False

    def __enter__(self) -> PulseCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(
        self,
        *,
        kb_id: str,
        channel: str,
        event: str,
        id: str,
        serial: int,
        client_id: str | None,
        data: Any = None,
        exclude: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._messages.append(PublishedMessage(channel, event, data, id, kb_id, serial, client_id, exclude))

    def run_on_commit(self) -> None:
        """Run the pending on-commit callbacks registered since the capture started, when only the test case's
        transaction is open (``TestCase``; elsewhere Django runs them at commit). Callbacks they register run
        too."""
        for conn in connections.all(initialized_only=True):
            # Only the test case's own atomic blocks: inside the test's own transaction.atomic() the callbacks
            # wait for that block, as in production.
            if not conn.in_atomic_block or not all(getattr(a, "_from_testcase", False) for a in conn.atomic_blocks):
                continue
            done = self._skip.setdefault(conn.alias, [])
            while True:
                pending: list[Any] = [e for e in conn.run_on_commit if not any(e is d for d in done)]
                if not pending:
                    break
                for entry in pending:
                    done.append(entry)
                    _, callback, robust = entry
                    if robust:
                        try:
                            callback()
                        except Exception as exc:
                            logger.error("Error calling %r in on_commit() (%s).", callback, exc, exc_info=exc)
                    else:
                        callback()

    # reading
    @property
    def messages(self) -> list[PublishedMessage]:
        """Every message published so far, in publish order."""
        self.run_on_commit()
        return list(self._messages)

    def filter(
        self, channel: str | None = None, event: str | None = None, *, data: Any = _UNSET, kb_id: str | None = None
    ) -> list[PublishedMessage]:
        """The messages matching every criterion given (``data`` compared with ``==``; ``mock.ANY`` works)."""
        return [m for m in self.messages if m.matches(channel, event, data, kb_id)]

    def clear(self) -> None:
        """Forget what was recorded so far (pending on-commit publishes are run first, then forgotten too)."""
        self.run_on_commit()
        self._messages.clear()

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[PublishedMessage]:
        return iter(self.messages)

    # assertions
    def _listing(self) -> str:
        if not self._messages:
            return "Nothing was published."
        lines = [f"  {m.channel!r} {m.event!r} {m.data!r}" for m in self._messages]
        return "Published (channel, event, data):\n" + "\n".join(lines)

    def assert_published(
        self,
        channel: str | None = None,
        event: str | None = None,
        *,
        data: Any = _UNSET,
        kb_id: str | None = None,
        count: int | None = None,
    ) -> PublishedMessage:
        """Assert a message matching the criteria was published (exactly ``count`` of them if given); returns
        the last match. Raises ``AssertionError`` listing what was published."""
        found = self.filter(channel, event, data=data, kb_id=kb_id)
        wanted = _describe(channel, event, data, kb_id)
        if not found:
            raise AssertionError(f"Expected a message {wanted}; none was. {self._listing()}")
        if count is not None and len(found) != count:
            raise AssertionError(f"Expected {count} message(s) {wanted}; {len(found)} were. {self._listing()}")
        return found[-1]

    def assert_not_published(
        self, channel: str | None = None, event: str | None = None, *, data: Any = _UNSET, kb_id: str | None = None
    ) -> None:
        """Assert no message matching the criteria was published (no criteria: nothing at all)."""
        found = self.filter(channel, event, data=data, kb_id=kb_id)
        if found:
            raise AssertionError(
                f"Expected no message {_describe(channel, event, data, kb_id)}; {len(found)} were. {self._listing()}"
            )


def capture_published() -> PulseCapture:
    """A ``PulseCapture`` to use as a context manager (or ``.start()`` / ``.stop()``)."""
    return PulseCapture()


# -- configuration ---------------------------------------------------------------------------------------


def reset_pulse_state() -> None:
    """Forget the process's Pulse state (the runtime: broker, hub, presence, liveness, app cache); the next use
    builds it again from the current settings."""
    from .server.runtime import reset_runtime

    reset_runtime()


_MEMORY_BACKENDS = {
    "REDIS_URL": None,
    "BROKER_BACKEND": "django_pulse.broker.memory.MemoryBroker",
    "PRESENCE_BACKEND": "django_pulse.presence.memory.MemoryPresence",
}


@contextlib.contextmanager
def pulse_in_memory(**pulse: Any) -> Iterator[None]:
    """Run with Pulse (and the default channel layer) in process memory and fresh state: no Redis is touched.

    Keyword arguments are ``PULSE`` settings for the duration, over the project's own (e.g. ``HISTORY_SIZE=10``).
    """
    merged = {**(getattr(settings, "PULSE", None) or {}), **_MEMORY_BACKENDS, **pulse}
    layers = {**(getattr(settings, "CHANNEL_LAYERS", None) or {})}
    layers["default"] = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    reset_pulse_state()
    try:
        with override_settings(PULSE=merged, CHANNEL_LAYERS=layers):
            yield
    finally:
        reset_pulse_state()


class PulseTestMixin:
    """For ``TestCase`` / ``TransactionTestCase``: each test runs with ``pulse_in_memory()`` and a capture in
    ``self.pulse_published``; ``assertPublished`` / ``assertNotPublished`` are its assertions.

    Set ``pulse_settings = {...}`` on the class for extra ``PULSE`` settings.
    """

    pulse_settings: dict[str, Any] = {}
    pulse_published: PulseCapture

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        stack = contextlib.ExitStack()
        stack.enter_context(pulse_in_memory(**self.pulse_settings))
        self.pulse_published = stack.enter_context(capture_published())
        self.addCleanup(stack.close)  # type: ignore[attr-defined]

    def assertPublished(
        self,
        channel: str | None = None,
        event: str | None = None,
        *,
        data: Any = _UNSET,
        kb_id: str | None = None,
        count: int | None = None,
    ) -> PublishedMessage:
        return self.pulse_published.assert_published(channel, event, data=data, kb_id=kb_id, count=count)

    def assertNotPublished(
        self, channel: str | None = None, event: str | None = None, *, data: Any = _UNSET, kb_id: str | None = None
    ) -> None:
        self.pulse_published.assert_not_published(channel, event, data=data, kb_id=kb_id)


# -- the WebSocket side ----------------------------------------------------------------------------------


class HandshakeRefused(AssertionError):
    """The WebSocket handshake was refused; the message says why and how to fix it."""


class PulseActionError(AssertionError):
    """The server answered a request (or the ``auth``) with an ``error`` frame."""

    def __init__(self, action: str, frame: dict[str, Any]) -> None:
        self.action = action
        self.frame = frame
        self.code: str = str(frame.get("code"))
        self.message: str = str(frame.get("message"))
        super().__init__(f"{action!r} was refused: {self.code}: {self.message}")


def _default_application() -> Any:
    if getattr(settings, "ASGI_APPLICATION", None):
        from channels.routing import get_default_application

        return get_default_application()
    from channels.routing import URLRouter

    from .routing import websocket_urlpatterns

    return URLRouter(websocket_urlpatterns)


def _origin_refusal(origin: str | None) -> str | None:
    """Why Pulse's origin check refuses ``origin``, or None when it allows it."""
    from channels.security.websocket import OriginValidator

    from ._conf import pulse_settings

    allowed = pulse_settings.ALLOWED_ORIGINS
    if allowed is not None and "*" in allowed:
        return None
    if allowed is None:
        hosts = list(settings.ALLOWED_HOSTS) or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        source = f"settings.ALLOWED_HOSTS ({hosts!r}, as PULSE['ALLOWED_ORIGINS'] is None)"
    else:
        hosts = allowed
        source = f"PULSE['ALLOWED_ORIGINS'] ({allowed!r})"
    validator = OriginValidator(None, hosts)
    if validator.valid_origin(urlparse(origin) if origin is not None else None):
        return None
    shown = "no Origin header" if origin is None else f"the Origin {origin!r}"
    return (
        f"{shown} is not allowed by {source}. Pass origin='http://<an allowed host>' to PulseCommunicator, "
        "or add the host to ALLOWED_HOSTS / PULSE['ALLOWED_ORIGINS']."
    )


class PulseCommunicator:
    """One in-process WebSocket connection to Pulse, speaking its protocol (docs/protocol.md).

        async with PulseCommunicator() as ws:          # connected (handshake accepted)
            await ws.auth("alice")                       # a token from pulse.get_token("alice")
            await ws.subscribe("orders.1")
            message = await ws.receive_message()        # {"action": "message", "name": ..., "data": ...}

    ``application`` defaults to the project's ``ASGI_APPLICATION`` (so your routing and middleware are tested
    too), else the Pulse routes alone. Requests return the server's ``ok`` frame and raise
    ``PulseActionError`` (``.code``, ``.message``) on an ``error`` frame. Frames that arrive while a reply is
    awaited are kept for ``receive_*``; pings are answered and never returned. The database must be visible
    to other threads (``TransactionTestCase``, ``django_db(transaction=True)``): the consumer reads the app in a
    worker thread.
    """

    def __init__(
        self,
        application: Any = None,
        path: str | None = None,
        *,
        origin: str | None = "http://testserver",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        from channels.testing import WebsocketCommunicator

        from ._conf import pulse_settings

        self.application = application if application is not None else _default_application()
        self.path = path if path is not None else "/" + pulse_settings.WS_PATH
        self.origin = origin
        all_headers = list(headers or [])
        if origin is not None and not any(name.lower() == b"origin" for name, _ in all_headers):
            all_headers.append((b"origin", origin.encode("latin1")))
        self.communicator = WebsocketCommunicator(self.application, self.path, headers=all_headers)
        self.connected: dict[str, Any] = {}
        self._ref = 0
        self._buffer: list[dict[str, Any]] = []
        self._open = False

    async def __aenter__(self) -> PulseCommunicator:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    # connection
    async def connect(self, timeout: float = 2) -> None:
        """Open the WebSocket; raises ``HandshakeRefused`` saying why when the handshake is refused."""
        try:
            accepted, code = await self.communicator.connect(timeout)
        except ValueError as exc:  # Channels' routers raise ValueError for an unrouted path or scope type
            raise HandshakeRefused(
                f"The ASGI application has no WebSocket route for {self.path!r} ({exc}). Route "
                "django_pulse.routing.websocket_urlpatterns under ProtocolTypeRouter's 'websocket' key "
                "(docs/installation.md)."
            ) from None
        if not accepted:
            why = _origin_refusal(self.origin) or (
                "the Origin is allowed, so something in the ASGI application before the Pulse consumer refused "
                "it (a middleware or another validator)"
            )
            raise HandshakeRefused(f"The WebSocket handshake to {self.path!r} was refused (close {code}): {why}")
        self._open = True

    async def disconnect(self, code: int = 1000) -> None:
        if self._open:
            self._open = False
            await self.communicator.disconnect(code)

    async def auth(
        self,
        client_id: Any = "alice",
        *,
        token: str | None = None,
        kb_id: str | None = None,
        capabilities: dict[str, list[str]] | None = None,
        ttl: int | None = None,
    ) -> dict[str, Any]:
        """Authenticate as ``client_id`` (a fresh ``pulse.get_token``) or with ``token``; returns the
        ``connected`` frame. Raises ``PulseActionError`` with the token's error code when refused."""
        if not self._open:
            await self.connect()
        if token is None:
            from asgiref.sync import sync_to_async

            from . import sdk

            issued = await sync_to_async(sdk.get_token)(client_id, kb_id=kb_id, capabilities=capabilities, ttl=ttl)
            token = str(issued["token"])
        await self.send({"action": "auth", "token": token})
        frame = await self._next(2.0, lambda f: f["action"] in ("connected", "error"))
        if frame["action"] == "error":
            raise PulseActionError("auth", frame)
        self.connected = frame
        return frame

    # raw frames
    async def send(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_to(text_data=json.dumps(frame))

    async def _read(self, timeout: float) -> dict[str, Any]:
        while True:
            output = await self.communicator.receive_output(timeout)
            if output["type"] == "websocket.close":
                self._open = False
                raise AssertionError(f"The server closed the connection (code {output.get('code')}).")
            frame: dict[str, Any] = json.loads(output["text"])
            if frame.get("action") == "ping":
                await self.send({"action": "pong"})
                continue
            return frame

    async def _next(self, timeout: float, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for index, frame in enumerate(self._buffer):
            if wanted(frame):
                return self._buffer.pop(index)
        while True:
            frame = await self._read(timeout)
            if wanted(frame):
                return frame
            self._buffer.append(frame)

    async def receive_frame(self, timeout: float = 1) -> dict[str, Any]:
        """The next frame of any kind (pings excepted)."""
        return await self._next(timeout, lambda f: True)

    async def receive_message(self, channel: str | None = None, timeout: float = 1) -> dict[str, Any]:
        """The next ``message`` frame (on ``channel`` if given); other frames stay for later."""
        return await self._next(
            timeout, lambda f: f["action"] == "message" and (channel is None or f["channel"] == channel)
        )

    async def receive_whisper(self, channel: str | None = None, timeout: float = 1) -> dict[str, Any]:
        """The next ``whisper`` frame (``name``, ``data``, ``clientId``, ``connectionId``; on ``channel`` if given)."""
        return await self._next(
            timeout, lambda f: f["action"] == "whisper" and (channel is None or f["channel"] == channel)
        )

    async def receive_presence(self, channel: str | None = None, timeout: float = 1) -> dict[str, Any]:
        """The next ``presence`` event frame (``event``: enter/update/leave, ``member``)."""
        return await self._next(
            timeout, lambda f: f["action"] == "presence" and (channel is None or f["channel"] == channel)
        )

    async def receive_nothing(self, timeout: float = 0.1) -> bool:
        """True when no frame (other than pings) arrives within ``timeout`` and none is waiting."""
        if self._buffer:
            return False
        nothing: bool = await self.communicator.receive_nothing(timeout)
        return nothing

    async def receive_close(self, timeout: float = 2) -> int:
        """Wait for the server to close the connection (frames before it are dropped); returns the close code."""
        while True:
            output = await self.communicator.receive_output(timeout)
            if output["type"] == "websocket.close":
                self._open = False
                return int(output.get("code", 1000))

    # requests
    async def request(self, action: str, **members: Any) -> dict[str, Any]:
        """Send ``action`` with a new ``ref``; returns the ``ok`` frame or raises ``PulseActionError``."""
        self._ref += 1
        ref = self._ref
        await self.send({"action": action, "ref": ref, **members})
        frame = await self._next(2.0, lambda f: f["action"] in ("ok", "error") and f.get("ref") == ref)
        if frame["action"] == "error":
            raise PulseActionError(action, frame)
        return frame

    async def subscribe(self, channel: str, **options: Any) -> dict[str, Any]:
        return await self.request("subscribe", channel=channel, **options)

    async def unsubscribe(self, channel: str) -> dict[str, Any]:
        return await self.request("unsubscribe", channel=channel)

    async def publish(
        self, channel: str, name: str, data: Any = None, *, id: str | None = None, to_others: bool = False
    ) -> dict[str, Any]:
        """Publish (``to_others=True``: not delivered back to this connection, which gets an ``excluded``
        frame in its place)."""
        members: dict[str, Any] = {"channel": channel, "name": name, "data": data}
        if id is not None:
            members["id"] = id
        if to_others:
            members["exclude"] = self.connected["connectionId"]
        return await self.request("publish", **members)

    async def whisper(self, channel: str, name: str, data: Any = None) -> dict[str, Any]:
        """A client event to the channel's other subscribers (the ``whisper`` capability): not stored, no serial."""
        return await self.request("whisper", channel=channel, name=name, data=data)

    async def history(self, channel: str, **options: Any) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = (await self.request("history", channel=channel, **options))["messages"]
        return messages

    async def enter(self, channel: str, data: Any = None) -> dict[str, Any]:
        member: dict[str, Any] = (await self.request("presence.enter", channel=channel, data=data))["member"]
        return member

    async def update(self, channel: str, data: Any = None) -> dict[str, Any]:
        member: dict[str, Any] = (await self.request("presence.update", channel=channel, data=data))["member"]
        return member

    async def leave(self, channel: str) -> None:
        await self.request("presence.leave", channel=channel)

    async def presence(self, channel: str) -> list[dict[str, Any]]:
        """The channel's members (``presence.get``)."""
        members: list[dict[str, Any]] = (await self.request("presence.get", channel=channel))["members"]
        return members

    async def presence_subscribe(self, channel: str) -> list[dict[str, Any]]:
        """Subscribe to the channel's presence events; returns the snapshot of members."""
        members: list[dict[str, Any]] = (await self.request("presence.subscribe", channel=channel))["members"]
        return members
