"""The WebSocket consumer: one connection's state machine between the socket, the protocol and the hub.

docs/protocol.md is the contract. Frames are parsed and built by ``protocol``; messages reach the socket
through this connection's ``Outbox`` (``outbox.py``), which the hub writes to directly. The actions
(``actions.py``, ``presence_actions.py``) are registered in ``handlers``. Handlers run one at a
time per connection, in frame order, so replies keep request order.

Extension points (presence): ``PulseConsumer.handlers`` maps an ``Action`` to an async handler
``(consumer, request) -> result dict | None`` (the ``ok`` members; None sends no reply); a handler raises a
``PulseError`` for an error reply. ``on_authenticated()`` and ``on_disconnect(code)`` are awaited.

Transports (this WebSocket consumer; ``sse_connection.SSEConnection``) meet the connection through
``transport.Transport``: what a transport provides (``send_frame``, ``keepalive``, ``close``,
``silence_timeout``) and what it calls here (``attach``/``detach``, ``serving``, ``make_outbox``,
``start_session``, ``end``, ``absorb_cancellation``), so neither uses the other's private names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from django.conf import settings

from .. import signals
from .._conf import pulse_settings
from ..authorization import Decision, decide, resolve_user
from ..broker.base import CONTROL_TOPIC
from ..exceptions import ProtocolViolation, PulseError, TokenError
from ..protocol import (
    PING_FRAME,
    Action,
    CloseCode,
    ErrorCode,
    Operation,
    RateLimiter,
    Request,
    close_code_for,
    connected_frame,
    dumps,
    error_frame,
    ok_frame,
    parse_frame,
)
from ..protocol.tokens import Claims
from ..streams import StreamGrant, remember_stream
from ._io import install_daphne_shutdown, release_handshake, server_send
from .app_access import aauthenticate_token
from .control import RECOVERED
from .outbox import Outbox, Sink
from .recovery import ReplaySink, connection_key, recovered_connection_id
from .runtime import get_runtime

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["Handler", "PulseConsumer"]

logger = logging.getLogger("django_pulse.server.consumer")

Handler = Callable[["PulseConsumer", Request], Awaitable[dict[str, Any] | None]]


class _Limits:
    """The settings a connection needs, read once per connection (the hot path reads no settings)."""

    __slots__ = (
        "auth_timeout",
        "direct_write",
        "grace",
        "heartbeat",
        "history_size",
        "leeway",
        "max_connections_per_client",
        "max_message_size",
        "max_presence_data",
        "max_subscriptions",
        "outbound_limit",
        "publish_rate",
        "rate",
        "rate_burst",
        "whisper_rate",
    )

    def __init__(self) -> None:
        s = pulse_settings
        self.max_message_size = s.MAX_MESSAGE_SIZE
        self.max_subscriptions = s.MAX_SUBSCRIPTIONS
        self.auth_timeout = s.AUTH_TIMEOUT
        self.heartbeat = s.HEARTBEAT_INTERVAL
        self.grace = s.HEARTBEAT_GRACE
        self.rate = s.RATE_LIMIT
        self.rate_burst = s.RATE_BURST
        self.publish_rate = s.PUBLISH_RATE
        self.whisper_rate = s.WHISPER_RATE
        self.outbound_limit = s.OUTBOUND_BUFFER_LIMIT
        self.direct_write = s.DIRECT_WRITE
        self.max_presence_data = s.PRESENCE_MAX_DATA
        self.leeway = s.TOKEN_LEEWAY
        self.history_size = s.HISTORY_SIZE
        self.max_connections_per_client = s.MAX_CONNECTIONS_PER_CLIENT

    def announce(self) -> dict[str, int]:
        return {
            "maxMessageSize": self.max_message_size,
            "maxSubscriptions": self.max_subscriptions,
            "heartbeatInterval": int(self.heartbeat * 1000),
            "heartbeatGrace": int(self.grace * 1000),
            "maxPresenceData": self.max_presence_data,
            "publishRate": int(self.publish_rate),
            "whisperRate": int(self.whisper_rate),
        }


def _connection_limits(runtime: Runtime) -> _Limits:
    """The process's ``_Limits``, shared by its connections (~200 bytes each otherwise); rebuilt when
    ``settings.PULSE`` is replaced (a PULSE change also resets the runtime, which holds it)."""
    user = getattr(settings, "PULSE", None)
    cached = runtime.connection_limits
    if cached is None or cached[0] is not user:
        cached = runtime.connection_limits = (user, _Limits())
    limits: _Limits = cached[1]
    return limits


def _full_bucket(rate: float) -> RateLimiter:
    """A rate limit of ``rate`` per second with a burst of one second's worth (at least 1), full: the same as one
    made when the connection opened, since a bucket refills to its burst and stays there until used."""
    return RateLimiter(rate, max(rate, 1.0), time.monotonic())


# Seconds a closed connection waits for the server's websocket.disconnect before it ends itself.
ABANDON_AFTER = 5.0


class PulseConsumer(AsyncConsumer):  # type: ignore[misc]
    """One WebSocket connection speaking the Pulse protocol.

    Attributes for handlers and hooks: ``runtime`` (this process's ``Runtime`` as it was when the connection was
    made: its broker, hub, presence backend; kept for the connection's life), ``connection_id``, ``claims``
    (None until authenticated), ``client_id``, ``kb_id``, ``subscriptions`` (channel -> topic), ``outbox``.
    """

    # No channel-layer channel per socket: messages arrive through the hub.
    channel_layer_alias = None

    # The transport (transport.Transport): its name, and whether the heartbeat closes a connection whose
    # client has been silent longer than HEARTBEAT_INTERVAL + HEARTBEAT_GRACE (it answers pings over WebSocket).
    transport: ClassVar[str] = "websocket"
    silence_timeout: ClassVar[bool] = True

    # Slots, not an instance dict: with this many attributes the dict outgrows CPython's shared-key layout and
    # costs ~1.5 KB per connection (docs/performance.md, "Memory per connection"). AsyncConsumer has no
    # __slots__, so subclasses (and attributes not listed here) still get a __dict__.
    __slots__ = (
        "_abandon_timer",
        "_abandoned",
        "_auth_timer",
        "_close_code",
        "_expiry_timer",
        "_finished",
        "_heartbeat_timer",
        "_inbound",
        "_last_seen",
        "_publishes",
        "_registered",
        "_slot",
        "_task",
        "_user",
        "_user_loaded",
        "_whispers",
        "base_send",
        "catching_up",
        "channel_layer",
        "claims",
        "client_id",
        "closed",
        "connection_id",
        "instance",
        "kb_id",
        "limits",
        "outbox",
        "presence_subscriptions",
        "runtime",
        "scope",
        "stream_grants",
        "subscriptions",
        "superseded",
    )

    # Filled from actions.HANDLERS (imported at the end of this module).
    handlers: ClassVar[dict[Action, Handler]] = {}

    def __init__(self, *args: Any, runtime: Runtime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Looked up once, here, where the server makes the connection (``as_asgi()``'s factory, or a transport's
        # entry point that hands its own): everything below reads ``self.runtime``.
        self.runtime = runtime if runtime is not None else get_runtime()
        self.connection_id = "c_" + secrets.token_urlsafe(12)
        # Distinguishes this consumer from an older one of a recovered connection id, across processes.
        self.instance = secrets.token_urlsafe(6)
        # Set when a newer connection recovered this one's id (then closed with 4006): its end must not end
        # what the id holds (presence members).
        self.superseded = False
        self.claims: Claims | None = None
        self.client_id = ""
        self.kb_id = ""
        self.subscriptions: dict[str, str] = {}
        # The next three are None until first needed: most connections never use them, and an empty dict is 64
        # bytes (docs/performance.md, "Memory per connection").
        # channel -> what a signed stream name presented on this connection grants there (live templates).
        self.stream_grants: dict[str, StreamGrant] | None = None
        # topic -> the sink of a subscription still catching up with live delivery (recovery.ReplaySink).
        self.catching_up: dict[str, ReplaySink] | None = None
        self.outbox: Outbox | None = None
        # channel -> the sink of a presence.subscribe (presence_actions.PresenceSink)
        self.presence_subscriptions: dict[str, Any] | None = None
        self._user: Any = None
        self._user_loaded = False
        self.limits = _connection_limits(self.runtime)
        self.closed = False
        self._close_code: int | None = None
        self._finished = False
        self._registered = False
        # The slot this connection holds among its client id's open connections (MAX_CONNECTIONS_PER_CLIENT).
        self._slot: str | None = None
        now = time.monotonic()
        self._last_seen = now
        self._inbound = RateLimiter(self.limits.rate, self.limits.rate_burst, now)
        # Made by the first publish / whisper (publish_limiter, whisper_limiter): most connections only listen.
        self._publishes: RateLimiter | None = None
        self._whispers: RateLimiter | None = None
        self._task: asyncio.Task[Any] | None = None
        self._abandoned = False
        self._abandon_timer: asyncio.TimerHandle | None = None
        self._auth_timer: asyncio.TimerHandle | None = None
        # Slots of the runtime's heartbeat and expiry TimerWheels (timers.py), None when not scheduled.
        self._heartbeat_timer: float | None = None
        self._expiry_timer: float | None = None

    # -- Channels plumbing ------------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # What AsyncConsumer.__call__ does without a channel layer, minus await_many_dispatch's extra task
        # and asyncio.wait() per message: this consumer has one source of events, the socket.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        self.attach()
        async with self.serving():
            with contextlib.suppress(StopConsumer):
                while True:
                    await self.dispatch(await receive())

    # -- what transports call (transport.Transport) ---------------------------------------------------------

    def attach(self) -> None:
        """The current task serves this connection until ``detach()``: the process counts it (shutdown closes
        it) and a close the server never confirms cancels this task."""
        self._task = asyncio.current_task()
        self.runtime.connections.add(self)

    def detach(self) -> None:
        """The serving task is returning (after ``end``, or cancelled)."""
        self.runtime.connections.discard(self)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Around a transport's receive loop (after ``attach``): a cancellation of the task ends the connection
        (``absorb_cancellation``) and is re-raised unless it was this connection's own; then ``detach``."""
        try:
            yield
        except asyncio.CancelledError:
            if not await self.absorb_cancellation():
                raise
        finally:
            self.detach()
        if self._abandon_timer is not None:
            self._abandon_timer.cancel()

    def make_outbox(self, send: Any, **kwargs: Any) -> Outbox:
        """This connection's outbox on ``send`` (``Outbox``'s keyword arguments in ``kwargs``), with its limit,
        and closing this connection when the outbox cuts a slow consumer."""
        return Outbox(send, self.limits.outbound_limit, self._outbox_closed, report=self.runtime.fast_path, **kwargs)

    async def start_session(self) -> bool:
        """For a transport that set ``claims``, ``client_id`` and ``kb_id`` itself (no ``auth`` frame: SSE
        unidirectional streams): register with the hub, start the expiry and heartbeat timers, send
        ``client_connected`` and run ``on_authenticated``. False (nothing started) when the hub refused."""
        try:
            await self.runtime.hub.register(self)
        except PulseError:
            return False
        self._registered = True
        loop = asyncio.get_running_loop()
        self._schedule_expiry(loop)
        self._schedule_heartbeat()
        await self._send_signal(
            signals.client_connected, kb_id=self.kb_id, client_id=self.client_id, connection_id=self.connection_id
        )
        await self.on_authenticated()
        return True

    async def end(self, code: int) -> None:
        """The transport is gone (the client went away with ``code``, or after this side's close): end the
        subscriptions and presence, with the close code sent if this side closed, else ``code``. Once."""
        await self._finish(self._close_code if self._close_code is not None else int(code))

    async def absorb_cancellation(self) -> bool:
        """This connection's task was cancelled; end the connection. True: the cancellation was our own
        (``_abandon``: the close was sent but the server never confirmed it) and is absorbed; False: the server
        cancelled it (daphne on SIGTERM, when its own shutdown trigger works; see ``shutdown``), so the client
        is told to reconnect (1001 going_away) and cleaned up (presence leaves at once), and the caller
        re-raises. Every transport's receive loop ends this way."""
        if self._abandoned:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._finish(self._close_code if self._close_code is not None else CloseCode.GOING_AWAY)
            return True
        await self.go_away()
        return False

    async def go_away(self, code: int = CloseCode.GOING_AWAY, timeout: float = 1.0) -> None:
        """Close with ``code`` (1001: reconnect elsewhere), wait up to ``timeout`` s until the close frame has
        left the server's buffer, then end this connection's subscriptions and presence."""
        if not self.closed:
            self.close(code)
            if self.outbox is not None:
                await self.outbox.flush(timeout)
        await self._finish(code)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch hops to a thread (aclose_old_connections) before every message; this consumer
        # touches the database only to check tokens, through database_sync_to_async, so it skips that hop.
        kind = message["type"]
        if kind == "websocket.receive":
            await self.websocket_receive(message)
        elif kind == "websocket.connect":
            await self.websocket_connect(message)
        elif kind == "websocket.disconnect":
            await self.websocket_disconnect(message)
        else:
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {kind}")
            await handler(message)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        from .shutdown import logged_shutdown

        install_daphne_shutdown(logged_shutdown)
        # The server's own send, behind any ASGI middleware's (docs/servers.md, "In front of the application").
        server = server_send(self.scope, self.base_send)
        self.outbox = self.make_outbox(self.base_send, direct_write=self.limits.direct_write, server=server)
        self.outbox.push({"type": "websocket.accept"}, 0)
        if self.limits.direct_write:
            # What daphne and uvicorn keep of the opening handshake is never read again (docs/performance.md).
            release_handshake(server)
        if self.runtime.shut_down:
            # This process has begun its graceful shutdown and still accepts (its server stops listening later;
            # a load balancer may route a reconnect here meanwhile): go elsewhere now, instead of being dropped
            # without a close code when the server stops (seen as 1005/1006 under granian and daphne).
            self.close(CloseCode.GOING_AWAY)
            return
        loop = asyncio.get_running_loop()
        self._auth_timer = loop.call_later(self.limits.auth_timeout, self._auth_timed_out)

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        now = time.monotonic()
        self._last_seen = now
        text = message.get("text")
        if text is None:
            if not self._admit(now, None):
                return
            self.send_frame(error_frame(ErrorCode.UNSUPPORTED_FRAME, "Binary frames are not supported."))
            return
        try:
            request = parse_frame(text, self.limits.max_message_size)
        except PulseError as exc:
            if self._admit(now, exc.ref):
                self.send_frame(error_frame(exc.code, exc.message, exc.ref))
            return
        if not self._admit(now, request.ref):
            return
        await self.handle_request(request)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.end(int(message.get("code", CloseCode.GOING_AWAY)))
        raise StopConsumer()

    # -- requests -------------------------------------------------------------------------------------

    def _admit(self, now: float, ref: str | int | None) -> bool:
        """Inbound rate limit: False (after an error reply, or a close on a sustained flood) to drop a frame."""
        if self._inbound.allow(now):
            return True
        self.runtime.metrics.rate_limited()
        if self._inbound.flooding:
            self.close(CloseCode.RATE_LIMITED)
        else:
            self.send_frame(error_frame(ErrorCode.RATE_LIMITED, "Too many frames; this one was dropped.", ref))
        return False

    async def handle_request(self, request: Request) -> None:
        """Run the handler of ``request.action``; send exactly one reply when it has a ``ref``."""
        ref = request.ref
        try:
            if request.action is Action.PONG:
                return
            if request.action is Action.AUTH:
                result = await self._auth(request)
            elif self.claims is None:
                raise ProtocolViolation("Send an auth frame first.", ErrorCode.NOT_AUTHENTICATED)
            else:
                handler = self.handlers.get(request.action)
                if handler is None:
                    raise ProtocolViolation(
                        f"Action {request.action.value!r} is not available on this server.", ErrorCode.UNKNOWN_ACTION
                    )
                if "stream" in request.members:  # a signed stream name from a page (live templates)
                    if self.stream_grants is None:
                        self.stream_grants = {}
                    remember_stream(
                        self.stream_grants,
                        request.members["stream"],
                        channel=request.members.get("channel"),
                        kb_id=self.kb_id,
                        client_id=self.client_id,
                    )
                result = await handler(self, request)
        except PulseError as exc:
            if not self.closed:
                self.send_frame(error_frame(exc.code, exc.message, ref))
            return
        except Exception:
            logger.exception("Handler for %r failed on connection %s", request.action.value, self.connection_id)
            if not self.closed:
                self.send_frame(error_frame(ErrorCode.INTERNAL_ERROR, "The server failed; the error is logged.", ref))
            return
        if ref is not None and result is not None and not self.closed:
            self.send_frame(ok_frame(ref, result))

    # -- authentication -----------------------------------------------------------------------------

    async def _auth(self, request: Request) -> dict[str, Any] | None:
        token = request.members["token"]
        if self.claims is not None:
            return await self._refresh(token)
        try:
            claims = await aauthenticate_token(token, apps=self.runtime.apps)
        except PulseError as exc:
            self.runtime.metrics.auth_failed(exc.code.value)
            if not self.closed:
                self.send_frame(error_frame(exc.code, exc.message, request.ref))
                self.close(close_code_for(exc.code))
            return None
        if self.closed:
            return None
        self.claims = claims
        self.client_id = claims.client_id
        self.kb_id = claims.kb_id
        recovered: bool | None = None
        previous_process = ""
        if "recover" in request.members:
            previous = recovered_connection_id(request.members["recover"], claims.kb_id, claims.client_id)
            # Without shared state (the in-memory broker) only this process can continue its own connections:
            # a key from another process means the server restarted and the connection's state is gone.
            broker = self.runtime.broker
            if previous is not None and (broker.shared or previous[1] == broker.process_id):
                self.connection_id, previous_process = previous
                recovered = True
            else:
                recovered = False
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None
        try:
            await self.runtime.hub.register(self)
            self._registered = True
        except PulseError as exc:
            self.send_frame(error_frame(exc.code, exc.message, request.ref))
            self.close(CloseCode.UNAVAILABLE)
            return None
        if not await self.take_slot():
            self.claims = None  # never connected: no client_connected, so no client_disconnected either
            self.send_frame(error_frame(ErrorCode.TOO_MANY_CONNECTIONS, self.too_many_message(), request.ref))
            self.close(CloseCode.TOO_MANY_CONNECTIONS)
            return None
        self.send_frame(
            connected_frame(
                connection_id=self.connection_id,
                client_id=claims.client_id,
                kb_id=claims.kb_id,
                expires_at=claims.expires_at * 1000,
                limits=self.limits.announce(),
                connection_key=connection_key(
                    claims.kb_id, claims.client_id, self.connection_id, self.runtime.broker.process_id
                ),
                recovered=recovered,
            )
        )
        self._schedule_expiry(asyncio.get_running_loop())
        self._schedule_heartbeat()
        if recovered:
            await self._recovered(previous_process)
        await self._send_signal(
            signals.client_connected, kb_id=self.kb_id, client_id=self.client_id, connection_id=self.connection_id
        )
        await self.on_authenticated()
        return None

    async def take_slot(self) -> bool:
        """Count this connection among its client id's open connections; False when the client has
        ``MAX_CONNECTIONS_PER_CLIENT`` open already (every process, with Redis). A store that cannot be reached
        admits the connection uncounted (logged): the limit must not lock everybody out during an outage."""
        limit = self.limits.max_connections_per_client
        if limit <= 0:
            return True
        slot = f"{self.connection_id}.{self.instance}"
        try:
            admitted = await self.runtime.client_connections.acquire(self.kb_id, self.client_id, slot, limit)
        except Exception:
            logger.warning(
                "Could not count connection %s of %r (Redis unreachable?); admitted",
                slot,
                self.client_id,
                exc_info=True,
            )
            return True
        if admitted:
            self._slot = slot
        else:
            logger.info(
                "Refused a connection of %r: %d open already (MAX_CONNECTIONS_PER_CLIENT)", self.client_id, limit
            )
        return admitted

    def too_many_message(self) -> str:
        return (
            f"This client has {self.limits.max_connections_per_client} open connections already "
            "(MAX_CONNECTIONS_PER_CLIENT); close one, or retry later."
        )

    async def _recovered(self, previous_process: str) -> None:
        """This connection continues ``connection_id``, last held by ``previous_process``.

        Presence keeps the id's members, now held by this process (``connection_continued``: no leave, no
        enter). Then every process is told (``fanout.RECOVERED``): each closes its other live connection with
        this id, if any (4006 superseded: a socket the client abandoned but the server had not noticed yet),
        and sends ``signals.connection_recovered`` (presence elsewhere forgets the id without leaving).
        """
        from .presence_actions import connection_continued

        try:
            await connection_continued(self, previous_process)
        except PulseError:
            logger.warning("Could not keep the presence of recovered connection %s", self.connection_id)
        command = {
            "type": RECOVERED,
            "kbId": self.kb_id,
            "clientId": self.client_id,
            "connectionId": self.connection_id,
            "processId": self.runtime.broker.process_id,
            "previousProcessId": previous_process,
            "instance": self.instance,
        }
        try:
            await self.runtime.broker.broadcast(CONTROL_TOPIC, dumps(command))
        except PulseError:
            # Redis unreachable: this process at least (the control sink does the same locally).
            logger.warning("Could not announce the recovery of %s to other processes", self.connection_id)
            self.runtime.hub.recovered(command)

    async def _refresh(self, token: str) -> dict[str, Any]:
        claims = await aauthenticate_token(token, apps=self.runtime.apps)
        if claims.client_id != self.client_id or claims.kb_id != self.kb_id:
            raise TokenError("The new token is for another client or app.", ErrorCode.CLIENT_ID_MISMATCH)
        self.claims = claims
        self._schedule_expiry(asyncio.get_running_loop())
        return {"expiresAt": claims.expires_at * 1000}

    def _schedule_expiry(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.claims is not None
        expiries = self.runtime.expiries
        if self._expiry_timer is not None:
            expiries.discard(self._expiry_timer, self)
        delay = max(0.0, self.claims.expires_at + self.limits.leeway - time.time())
        self._expiry_timer = expiries.add(delay, self)

    def _token_expired(self) -> None:
        self._expiry_timer = None
        self.close(CloseCode.TOKEN_EXPIRED)

    def _schedule_heartbeat(self) -> None:
        """The next heartbeat in ``HEARTBEAT_INTERVAL`` seconds (on the runtime's shared TimerWheel)."""
        self._heartbeat_timer = self.runtime.heartbeats.add(self.limits.heartbeat, self)

    def _auth_timed_out(self) -> None:
        self._auth_timer = None
        if self.claims is None:
            self.close(CloseCode.AUTH_TIMEOUT)

    def _heartbeat(self) -> None:
        self._heartbeat_timer = None
        if self.closed:
            return
        silent = time.monotonic() - self._last_seen
        if self.silence_timeout and silent > self.limits.heartbeat + self.limits.grace:
            self.close(CloseCode.HEARTBEAT_TIMEOUT)
            return
        self.keepalive()
        self._schedule_heartbeat()

    @property
    def max_subscriptions(self) -> int:
        return self.limits.max_subscriptions

    def publish_limiter(self) -> RateLimiter:
        """This connection's publish rate limit (``PUBLISH_RATE``), made by its first publish."""
        if self._publishes is None:
            self._publishes = _full_bucket(self.limits.publish_rate)
        return self._publishes

    def whisper_limiter(self) -> RateLimiter:
        """This connection's whisper rate limit (``WHISPER_RATE``), made by its first whisper."""
        if self._whispers is None:
            self._whispers = _full_bucket(self.limits.whisper_rate)
        return self._whispers

    # -- authorization ------------------------------------------------------------------------------

    async def get_user(self) -> Any:
        """The Django user of this connection's client id (resolved once, on first need)."""
        if not self._user_loaded:
            self._user = await database_sync_to_async(resolve_user)(self.client_id)
            self._user_loaded = True
        return self._user

    async def authorize(self, channel: str, operation: Operation) -> Decision:
        """Allow ``operation`` on ``channel`` (capabilities, then authorize hooks) or raise ``Forbidden``."""
        assert self.claims is not None
        grants = self.stream_grants
        return await decide(self.claims, channel, operation, self.get_user, grants.get(channel) if grants else None)

    # -- hooks ------------------------------------------------------------------------------------------

    async def on_authenticated(self) -> None:
        """Called once the connection is authenticated and ``connected`` was sent (subclasses: call super)."""
        from .presence_actions import connection_started

        await connection_started(self)

    async def on_disconnect(self, code: int) -> None:
        """Called once when the connection ends (``code`` is the close code), after its subscriptions ended.

        Presence leaves here: at once after a clean close, after ``PRESENCE_GRACE`` after an abrupt one.

        When ``self.superseded`` is True (code 4006) a newer connection continues this ``connection_id``
        (``auth`` ``recover``): release this socket's own resources but do not end what the id holds (presence
        members stay with the id).
        """
        from .presence_actions import connection_ended

        await connection_ended(self, code)

    # -- subscriptions -------------------------------------------------------------------------------------

    def catch_up(self, topic: str, sink: ReplaySink) -> None:
        """The new subscription to ``topic`` reaches the hub through ``sink`` until it has caught up."""
        if self.catching_up is None:
            self.catching_up = {}
        self.catching_up[topic] = sink

    def stop_catching_up(self, topic: str) -> ReplaySink | None:
        """Forget the ``ReplaySink`` of ``topic``'s subscription (returned; None when it had caught up)."""
        pending = self.catching_up
        if not pending:
            return None
        sink = pending.pop(topic, None)
        if not pending:
            self.catching_up = None
        return sink

    def take_sink(self, topic: str) -> Sink:
        """The hub sink of this connection's subscription to ``topic``, which is ending."""
        sink = self.stop_catching_up(topic)
        if sink is not None:
            return sink
        assert self.outbox is not None
        return self.outbox

    def subscription_sink(self, topic: str) -> Sink | None:
        """The sink this connection's subscription to ``topic`` has in the hub (a ``ReplaySink`` while it catches
        up, then the outbox); the hub checks it is among the topic's sinks (exclusions: ``Hub.dispatch``)."""
        pending = self.catching_up
        sink = pending.get(topic) if pending else None
        return sink if sink is not None else self.outbox

    def _caught_up(self, sink: ReplaySink) -> None:
        # The subscription's live delivery has passed its replay: deliver straight to the outbox from now on.
        for topic, pending in list((self.catching_up or {}).items()):
            if pending is sink:
                self.stop_catching_up(topic)
                if self.outbox is not None and not self._finished:
                    self.runtime.hub.replace(topic, sink, self.outbox)

    # -- output ------------------------------------------------------------------------------------------

    def send_frame(self, text: str) -> None:
        """Queue one text frame to this connection, after everything queued before it."""
        if self.outbox is not None:
            self.outbox.send_text(text)

    def keepalive(self) -> None:
        """What the heartbeat sends every HEARTBEAT_INTERVAL: the protocol's ping (the client answers ``pong``)."""
        self.send_frame(PING_FRAME)

    def close(self, code: int) -> None:
        """Close the connection with ``code`` (after frames already queued). Safe from timers and callbacks."""
        if self.closed:
            return
        self.closed = True
        self._close_code = int(code)
        self._cancel_timers()
        if self.outbox is not None:
            self.outbox.close(code)
        self._schedule_abandon()

    def _outbox_closed(self, code: int) -> None:
        # The outbox closed the socket itself (slow consumer).
        if code == CloseCode.SLOW_CONSUMER:
            self.runtime.metrics.slow_consumer()
        if not self.closed:
            self.closed = True
            self._close_code = code
            self._cancel_timers()
            self._schedule_abandon()

    def _schedule_abandon(self) -> None:
        # A close that the server cannot deliver (uvicorn and granian wait until a peer that stopped reading
        # makes room in the socket buffer, i.e. forever) would leave this connection subscribed and present
        # with nobody on the other end. If no websocket.disconnect arrives in ABANDON_AFTER seconds, end it here:
        # clean up and return from the application (the server then closes the transport).
        if self._abandon_timer is None and not self._finished:
            with contextlib.suppress(RuntimeError):
                self._abandon_timer = asyncio.get_running_loop().call_later(ABANDON_AFTER, self._abandon)

    def _abandon(self) -> None:
        self._abandon_timer = None
        if self._finished or self._task is None or self._task.done():
            return
        logger.info(
            "Connection %s: the server did not confirm its close (%s) within %.0f s; ending it",
            self.connection_id,
            self._close_code,
            ABANDON_AFTER,
        )
        self._abandoned = True
        self._task.cancel()

    def _cancel_timers(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self._heartbeat_timer is not None:
            self.runtime.heartbeats.discard(self._heartbeat_timer, self)
        if self._expiry_timer is not None:
            self.runtime.expiries.discard(self._expiry_timer, self)
        self._auth_timer = self._heartbeat_timer = self._expiry_timer = None

    async def _finish(self, code: int) -> None:
        if self._finished:
            return
        self._finished = True
        self.closed = True
        self._cancel_timers()
        if self.outbox is not None:
            self.outbox.cancel()
        hub = self.runtime.hub
        topics = list(self.subscriptions.values())
        self.subscriptions.clear()
        if topics and self.outbox is not None:
            await asyncio.gather(*(hub.unsubscribe(topic, self.take_sink(topic)) for topic in topics))
        if self._registered:
            hub.unregister(self)
        if self._slot is not None:
            slot, self._slot = self._slot, None
            await self.runtime.client_connections.release(slot)
        try:
            await self.on_disconnect(code)
        except Exception:
            logger.exception("on_disconnect failed on connection %s", self.connection_id)
        if self.claims is not None:
            await self._send_signal(
                signals.client_disconnected,
                kb_id=self.kb_id,
                client_id=self.client_id,
                connection_id=self.connection_id,
                code=code,
            )

    @staticmethod
    async def _send_signal(signal: Any, **kwargs: Any) -> None:
        for receiver, outcome in await signal.asend_robust(sender=PulseConsumer, **kwargs):
            if isinstance(outcome, BaseException):
                logger.error("A receiver of a django_pulse signal failed: %r", receiver, exc_info=outcome)


# The actions' handlers (actions.HANDLERS, presence actions included); their modules need the class, so they are
# imported after it.
from . import actions as _actions  # noqa: E402

PulseConsumer.handlers.update(_actions.HANDLERS)
