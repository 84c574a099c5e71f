"""The SSE endpoints: the ASGI HTTP application that serves Pulse over Server-Sent Events plus HTTP POST.

docs/transports.md is the user-facing description and docs/protocol.md ("The SSE transport") the contract.
One ASGI HTTP application (``pulse_sse_app``, mounted by ``django_pulse.routing.sse_urlpatterns`` beside the
WebSocket route) serves, under ``PULSE["SSE_PATH"]`` (``pulse/sse/``):

- ``POST ticket/`` ``{"token", "recover"?}``: checks the token and answers a single-use ``ticket`` (valid
  ``SSE_TICKET_TTL`` s) and the new stream's ``stream`` id, a secret that binds later POSTs to the stream.
  The token never appears in a URL.
- ``GET ?ticket=T``: the SDK stream. The connection authenticates with the ticket's token exactly as a
  WebSocket's first ``auth`` frame does and then carries the same frames, one ``data:`` event each.
- ``POST send/`` ``{"stream", "frames": [frame text, ...], "close"?}``: client-to-server frames, handled by
  the stream's connection as if they had arrived on a WebSocket (same handlers, limits and error codes; the
  replies arrive on the stream). Any server process accepts it: the frames go through the broker to the
  process holding the stream (topic ``s:<stream>``); 404 when no process holds it.
- ``GET ?stream=<signed>&stream=...``: a unidirectional stream for a plain ``EventSource`` / htmx, listening
  to channels the server chose (``django_pulse.streams.sign_stream``), authenticated by the session cookie
  (or anonymous); one named event per message, ``Last-Event-ID`` resumes.

This module is HTTP only (routes, CORS, bodies, tickets); the streams are ``sse_connection.SSEConnection``s,
the transport. ``pulse_sse_app`` is an entry point: it looks the runtime up once per request and hands it to
the connection it makes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .._conf import pulse_settings
from .._visitors import ANONYMOUS_ID_RE
from .._visitors import SESSION_KEY as ANONYMOUS_SESSION_KEY
from ..exceptions import PulseError
from ..protocol import Action, CloseCode, ErrorCode, Operation, Request, dumps, parse_frame
from ..protocol import sse as sse_wire
from ..protocol.strict_json import InvalidJSON, loads_strict
from ..protocol.tokens import Claims
from .app_access import aauthenticate_token
from .runtime import get_runtime
from .sse_connection import SSEConnection

if TYPE_CHECKING:
    from .runtime import Runtime

__all__ = ["SSEConnection", "pulse_sse_app"]

MAX_FRAMES_PER_POST = 100


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _origin_allowed(origin: str) -> bool:
    """``PULSE["ALLOWED_ORIGINS"]`` as the WebSocket handshake applies it (None: the project's ALLOWED_HOSTS)."""
    from django.conf import settings
    from django.http.request import split_domain_port, validate_host

    allowed = pulse_settings.ALLOWED_ORIGINS
    if allowed is not None and "*" in allowed:
        return True
    parsed = urlsplit(origin)
    if not parsed.scheme or not parsed.hostname:
        return False
    if allowed is None:
        host, _ = split_domain_port(parsed.netloc)
        hosts = list(settings.ALLOWED_HOSTS) or (["localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        return validate_host(host or parsed.hostname, hosts)
    return origin in allowed or any(
        validate_host(parsed.hostname, [pattern]) for pattern in allowed if "://" not in pattern
    )


def _cors_headers(scope: dict[str, Any]) -> list[tuple[bytes, bytes]] | None:
    """None when the request's ``Origin`` is not allowed; else the CORS headers to answer it with."""
    origin = _header(scope, b"origin")
    if origin is None:
        return []
    if not _origin_allowed(origin):
        return None
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-credentials", b"true"),
        (b"vary", b"Origin"),
    ]


async def _respond(
    send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"cache-control", b"no-store"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def _error(
    send: Any, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await _respond(send, status, {"error": {"code": code, "message": message}}, headers)


# On a 413: the server closes the connection after the answer instead of reading the rest of the body to keep
# it open for another request (uvicorn reads a refused body to its end, all 200 MB of it, otherwise).
_CLOSE = [(b"connection", b"close")]


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit`` bytes or the client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _json_object(send: Any, raw: bytes, cors: list[tuple[bytes, bytes]]) -> dict[str, Any] | None:
    """The body as a JSON object, decoded by the one decoder of client text (so a frame inside ``send/`` can hold
    no lone surrogate, which no subscriber's socket could take); None once a 400 has answered it."""
    try:
        body = loads_strict(raw)
    except InvalidJSON as exc:
        await _error(send, 400, ErrorCode.INVALID_JSON.value, exc.sentence(), cors)
        return None
    if not isinstance(body, dict):
        await _error(send, 400, ErrorCode.BAD_REQUEST.value, "The body must be a JSON object.", cors)
        return None
    return body


_TOKEN_STATUS = {
    ErrorCode.TOKEN_INVALID: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOKEN_NOT_YET_VALID: 401,
    ErrorCode.APP_UNKNOWN: 403,
    ErrorCode.APP_DISABLED: 403,
    ErrorCode.UNAVAILABLE: 503,
}


async def _ticket(
    runtime: Runtime, scope: dict[str, Any], receive: Any, send: Any, cors: list[tuple[bytes, bytes]]
) -> None:
    raw = await _read_body(receive, 16384)
    if raw is None:
        await _error(send, 413, ErrorCode.MESSAGE_TOO_LARGE.value, "The body is too large.", [*cors, *_CLOSE])
        return
    body = await _json_object(send, raw or b"{}", cors)
    if body is None:
        return
    token, recover = body.get("token"), body.get("recover")
    if not isinstance(token, str) or not 1 <= len(token) <= 8192 or not (recover is None or isinstance(recover, str)):
        await _error(send, 400, ErrorCode.BAD_REQUEST.value, "token must be a string of 1-8192 characters.", cors)
        return
    try:
        claims = await aauthenticate_token(token, apps=runtime.apps)
    except PulseError as exc:
        await _error(send, _TOKEN_STATUS.get(exc.code, 400), exc.code.value, exc.message, cors)
        return
    ticket = secrets.token_urlsafe(24)
    stream = secrets.token_urlsafe(24)
    ttl = pulse_settings.SSE_TICKET_TTL
    value = dumps({"token": token, "recover": recover, "stream": stream})
    try:
        await runtime.broker.put_once("sse:" + ticket, value, ttl)
    except PulseError as exc:
        await _error(send, 503, exc.code.value, exc.message, cors)
        return
    except NotImplementedError as exc:
        await _error(send, 501, ErrorCode.INTERNAL_ERROR.value, str(exc), cors)
        return
    await _respond(
        send,
        200,
        {"ticket": ticket, "stream": stream, "expiresIn": ttl, "clientId": claims.client_id, "kbId": claims.kb_id},
        cors,
    )


async def _send_frames(
    runtime: Runtime, scope: dict[str, Any], receive: Any, send: Any, cors: list[tuple[bytes, bytes]]
) -> None:
    limit = pulse_settings.MAX_MESSAGE_SIZE * 4 + 4096
    raw = await _read_body(receive, limit)
    if raw is None:
        message = f"A send body is at most {limit} bytes."
        await _error(send, 413, ErrorCode.MESSAGE_TOO_LARGE.value, message, [*cors, *_CLOSE])
        return
    body = await _json_object(send, raw, cors)
    if body is None:
        return
    stream, frames, close = body.get("stream"), body.get("frames", []), body.get("close")
    if (
        not isinstance(stream, str)
        or not 1 <= len(stream) <= 64
        or not isinstance(frames, list)
        or len(frames) > MAX_FRAMES_PER_POST
        or not all(isinstance(f, str) for f in frames)
        or not (close is None or (isinstance(close, int) and not isinstance(close, bool)))
    ):
        await _error(
            send,
            400,
            ErrorCode.BAD_REQUEST.value,
            f"stream must be the stream id, frames a list of at most {MAX_FRAMES_PER_POST} frame strings.",
            cors,
        )
        return
    payload: dict[str, Any] = {"frames": frames}
    if close is not None:
        payload["close"] = close
    try:
        delivered = await runtime.broker.deliver(f"s:{stream}", dumps(payload))
    except PulseError as exc:
        await _error(send, 503, exc.code.value, exc.message, cors)
        return
    if not delivered:
        await _error(send, 404, "stream_unknown", "No server process holds this stream (it ended).", cors)
        return
    await _respond(send, 202, {}, cors)


async def _session_client_id(scope: dict[str, Any]) -> str | None:
    """The client id of the Django session whose cookie came with the request: the user's pk, or for a visitor
    who is not logged in the anonymous id the session holds (``_visitors``: the id its pages' presence streams
    are bound to); None without either."""
    from django.conf import settings

    if "django.contrib.sessions" not in settings.INSTALLED_APPS:
        return None
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    cookie: SimpleCookie = SimpleCookie()
    with contextlib.suppress(Exception):
        cookie.load(raw)
    morsel = cookie.get(settings.SESSION_COOKIE_NAME)
    if morsel is None or not morsel.value:
        return None
    from importlib import import_module

    from channels.auth import get_user
    from channels.db import database_sync_to_async

    store = import_module(settings.SESSION_ENGINE).SessionStore(morsel.value)
    user = await get_user({"session": store})
    if getattr(user, "is_authenticated", False):
        return str(user.pk)
    anonymous = await database_sync_to_async(store.get)(ANONYMOUS_SESSION_KEY)
    return anonymous if isinstance(anonymous, str) and ANONYMOUS_ID_RE.match(anonymous) else None


async def _unidirectional(
    runtime: Runtime, scope: dict[str, Any], receive: Any, send: Any, values: list[str], cors: list[tuple[bytes, bytes]]
) -> None:
    from ..streams import InvalidStream, verify_stream

    if len(values) > pulse_settings.MAX_SUBSCRIPTIONS:
        await _error(send, 400, ErrorCode.TOO_MANY_SUBSCRIPTIONS.value, "Too many streams.", cors)
        return
    client_id = await _session_client_id(scope)
    channels: list[str] = []
    kb_id = ""
    try:
        for value in values:
            grant = verify_stream(value, client_id=client_id)
            if kb_id and grant.kb_id != kb_id:
                raise InvalidStream("All streams of one connection must be of one app.")
            kb_id = grant.kb_id
            if grant.channel not in channels:
                channels.append(grant.channel)
    except PulseError as exc:
        await _error(send, 403, exc.code.value, exc.message, cors)
        return
    last_event_id = _header(scope, b"last-event-id")
    if last_event_id is None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        last_event_id = (query.get("lastEventId") or [None])[0]
    positions = sse_wire.decode_positions(last_event_id, len(channels))
    now = int(time.time())
    claims = Claims(
        client_id=client_id or "anonymous-" + secrets.token_urlsafe(8),
        kb_id=kb_id,
        issued_at=now,
        expires_at=now + int(pulse_settings.SSE_MAX_AGE),
        token_id="",
        capabilities={channel: ["subscribe", "history"] for channel in channels},
    )
    conn = SSEConnection(scope, send, runtime=runtime, unidirectional=True)
    conn.claims = claims
    conn.client_id = claims.client_id
    conn.kb_id = claims.kb_id
    # Authorize hooks run before the response starts: a refusal is a 403 the EventSource does not retry.
    try:
        for channel in channels:
            await conn.authorize(channel, Operation.SUBSCRIBE)
    except PulseError as exc:
        await _error(send, 403, exc.code.value, exc.message, cors)
        return
    # A visitor's streams count among the connections of their client id (MAX_CONNECTIONS_PER_CLIENT), the
    # session's anonymous id included, refused before the response starts; streams without a session each have
    # an id of their own.
    if client_id is not None and not await conn.take_slot():
        await _error(send, 429, ErrorCode.TOO_MANY_CONNECTIONS.value, conn.too_many_message(), cors)
        return
    conn.extra_headers = cors
    conn.stream_channels = channels
    conn.positions = dict.fromkeys(channels)
    await conn.open()
    if not await conn.start_session():
        conn.close(CloseCode.UNAVAILABLE)
        await conn.run(receive)
        return
    for channel, position in zip(channels, positions, strict=True):
        members: dict[str, Any] = {"action": "subscribe", "channel": channel, "ref": 1}
        if position is not None:
            members["resume"] = {"serial": position[0], "epoch": position[1]}
        await conn.handle_request(parse_frame(dumps(members), 1 << 20))
        if conn.closed:
            break
        if channel not in conn.subscriptions:
            # The subscribe failed (the broker is unreachable): end the response; the browser retries.
            conn.close(CloseCode.UNAVAILABLE)
            break
    await conn.run(receive)


async def _sdk_stream(
    runtime: Runtime, scope: dict[str, Any], receive: Any, send: Any, ticket: str, cors: list[tuple[bytes, bytes]]
) -> None:
    try:
        raw = await runtime.broker.take_once("sse:" + ticket)
    except PulseError as exc:
        await _error(send, 503, exc.code.value, exc.message, cors)
        return
    if raw is None:
        await _error(send, 401, ErrorCode.TOKEN_INVALID.value, "The ticket is unknown, used or expired.", cors)
        return
    entry = json.loads(raw)
    conn = SSEConnection(scope, send, runtime=runtime, stream_id=entry["stream"])
    conn.extra_headers = cors
    if await conn.open():
        members = {"token": entry["token"]}
        if entry.get("recover"):
            members["recover"] = entry["recover"]
        await conn.handle_request(Request(Action.AUTH, None, members))
    await conn.run(receive)


async def pulse_sse_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI HTTP application of the SSE transport (docs/transports.md)."""
    if scope["type"] != "http":
        return
    cors = _cors_headers(scope)
    if cors is None:
        await _error(send, 403, ErrorCode.FORBIDDEN.value, "This Origin is not allowed (PULSE['ALLOWED_ORIGINS']).")
        return
    method = scope.get("method", "GET")
    base = "/" + pulse_settings.SSE_PATH
    path = scope.get("path", "")
    rest = path[len(base) :] if path.startswith(base) else path
    if method == "OPTIONS":
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    *cors,
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (b"access-control-allow-headers", b"content-type, last-event-id"),
                    (b"access-control-max-age", b"600"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return
    runtime = get_runtime()
    if rest == "ticket/" and method == "POST":
        await _ticket(runtime, scope, receive, send, cors)
    elif rest == "send/" and method == "POST":
        await _send_frames(runtime, scope, receive, send, cors)
    elif rest == "" and method == "GET":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "ticket" in query:
            await _sdk_stream(runtime, scope, receive, send, query["ticket"][0], cors)
        elif "stream" in query:
            await _unidirectional(runtime, scope, receive, send, query["stream"], cors)
        else:
            await _error(
                send, 400, ErrorCode.BAD_REQUEST.value, "Give ?ticket= (SDK) or ?stream= (signed streams).", cors
            )
    else:
        await _error(send, 405 if rest in ("", "ticket/", "send/") else 404, "bad_request", "Not here.", cors)
