"""A WebSocket client that speaks the Pulse protocol in-process: ``PulseCommunicator`` (Channels'
``WebsocketCommunicator`` underneath), ``HandshakeRefused``, ``PulseActionError``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from django.conf import settings

__all__ = ["HandshakeRefused", "PulseActionError", "PulseCommunicator"]


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

    from ..routing import websocket_urlpatterns

    return URLRouter(websocket_urlpatterns)


def _origin_refusal(origin: str | None) -> str | None:
    """Why Pulse's origin check refuses ``origin``, or None when it allows it."""
    from channels.security.websocket import OriginValidator

    from .._conf import pulse_settings

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


def _awaited(action: str, channel: str | None) -> str:
    return f"{action!r} frame" + ("" if channel is None else f" on channel {channel!r}")


class PulseCommunicator:
    """One in-process WebSocket connection to Pulse, speaking its protocol (docs/protocol.md).

        async with PulseCommunicator() as ws:          # connected (handshake accepted)
            await ws.auth("alice")                       # a token from pulse.get_token("alice")
            await ws.subscribe("orders.1")
            message = await ws.receive_message()        # {"action": "message", "name": ..., "data": ...}

    ``application`` defaults to the project's ``ASGI_APPLICATION`` (so your routing and middleware are tested
    too), else the Pulse routes alone. Requests return the server's ``ok`` frame and raise
    ``PulseActionError`` (``.code``, ``.message``) on an ``error`` frame. Frames that arrive while a reply is
    awaited are kept for ``receive_*``; pings are answered and never returned. A wait that times out raises
    ``TimeoutError`` saying what was awaited; the connection is over then (Channels' communicator stops the
    application on a timeout, so ``async with`` leaves quietly and a later call says it ended). The database must
    be visible to other threads (``TransactionTestCase``, ``django_db(transaction=True)``): the consumer reads the
    app in a worker thread.
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

        from .._conf import pulse_settings

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
        # What was awaited when a receive timed out: Channels' communicator then stops the application, so the
        # connection is over and later calls say so instead of failing with the task's CancelledError.
        self._timed_out: str | None = None

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

            from .. import sdk

            issued = await sync_to_async(sdk.get_token)(client_id, kb_id=kb_id, capabilities=capabilities, ttl=ttl)
            token = str(issued["token"])
        await self.send({"action": "auth", "token": token})
        frame = await self._next(2.0, lambda f: f["action"] in ("connected", "error"), "reply to 'auth'")
        if frame["action"] == "error":
            raise PulseActionError("auth", frame)
        self.connected = frame
        return frame

    # raw frames
    async def send(self, frame: dict[str, Any]) -> None:
        self._check_not_timed_out()
        await self.communicator.send_to(text_data=json.dumps(frame))

    def _check_not_timed_out(self) -> None:
        if self._timed_out is not None:
            raise RuntimeError(
                f"This PulseCommunicator's connection ended when waiting for {self._timed_out} timed out (the "
                "application is stopped on a timeout); open a new PulseCommunicator."
            )

    async def _output(self, timeout: float, what: str) -> dict[str, Any]:
        """The application's next ASGI message; ``TimeoutError`` naming ``what`` was awaited when none comes."""
        self._check_not_timed_out()
        try:
            output: dict[str, Any] = await self.communicator.receive_output(timeout)
        except TimeoutError:
            self._timed_out = what
            self._open = False
            pending = ", ".join(repr(f.get("action")) for f in self._buffer)
            kept = f" Frames received meanwhile, not what was awaited: {pending}." if pending else ""
            raise TimeoutError(f"No {what} within {timeout:g} s on {self.path!r}.{kept}") from None
        return output

    async def _read(self, timeout: float, what: str) -> dict[str, Any]:
        while True:
            output = await self._output(timeout, what)
            if output["type"] == "websocket.close":
                self._open = False
                raise AssertionError(f"The server closed the connection (code {output.get('code')}).")
            frame: dict[str, Any] = json.loads(output["text"])
            if frame.get("action") == "ping":
                await self.send({"action": "pong"})
                continue
            return frame

    async def _next(self, timeout: float, wanted: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The first frame ``wanted`` (kept ones first); the others are kept. ``what`` names it in the
        ``TimeoutError`` raised when it does not come within ``timeout``."""
        for index, frame in enumerate(self._buffer):
            if wanted(frame):
                return self._buffer.pop(index)
        while True:
            frame = await self._read(timeout, what)
            if wanted(frame):
                return frame
            self._buffer.append(frame)

    async def receive_frame(self, timeout: float = 1) -> dict[str, Any]:
        """The next frame of any kind (pings excepted)."""
        return await self._next(timeout, lambda f: True, "frame")

    async def receive_message(self, channel: str | None = None, timeout: float = 1) -> dict[str, Any]:
        """The next ``message`` frame (on ``channel`` if given); other frames stay for later."""
        return await self._next(
            timeout,
            lambda f: f["action"] == "message" and (channel is None or f["channel"] == channel),
            _awaited("message", channel),
        )

    async def receive_whisper(self, channel: str | None = None, timeout: float = 1) -> dict[str, Any]:
        """The next ``whisper`` frame (``name``, ``data``, ``clientId``, ``connectionId``; on ``channel`` if given)."""
        return await self._next(
            timeout,
            lambda f: f["action"] == "whisper" and (channel is None or f["channel"] == channel),
            _awaited("whisper", channel),
        )

    async def receive_presence(self, channel: str | None = None, timeout: float = 1) -> dict[str, Any]:
        """The next ``presence`` event frame (``event``: enter/update/leave, ``member``)."""
        return await self._next(
            timeout,
            lambda f: f["action"] == "presence" and (channel is None or f["channel"] == channel),
            _awaited("presence", channel),
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
            output = await self._output(timeout, "close from the server")
            if output["type"] == "websocket.close":
                self._open = False
                return int(output.get("code", 1000))

    # requests
    async def request(self, action: str, **members: Any) -> dict[str, Any]:
        """Send ``action`` with a new ``ref``; returns the ``ok`` frame or raises ``PulseActionError``."""
        self._ref += 1
        ref = self._ref
        await self.send({"action": action, "ref": ref, **members})
        frame = await self._next(
            2.0, lambda f: f["action"] in ("ok", "error") and f.get("ref") == ref, f"reply to {action!r} (ref {ref})"
        )
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
